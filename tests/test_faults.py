"""Fault scenarios, small: Redis going away, hanging and coming back empty, aggregators
SIGKILLed mid-batch, four workers under load, a Slack outage, an unreachable broker.

Each runs real components (private Valkey servers stopped and started again on the same
port, forked processes, a local HTTP server answering like Slack); the scenarios live in
``bench/faults_common.py``, which ``bench/faults.py`` runs full size. A scenario returns an
Outcome whose ``problems`` lists every promise the pipeline broke.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from bench.faults_common import (
    Outcome,
    SlackStandIn,
    aggregator_kills,
    alert_under_backlog,
    blackhole_port,
    broker_unreachable,
    concurrent_workers,
    free_port,
    reads_during_backlog_drain,
    redis_outage,
    redis_restarted_empty,
    slack_outage,
)
from monitor_worker.config import Settings


def _exact(outcome: Outcome) -> None:
    assert outcome.problems == []
    assert outcome.lost == 0 and outcome.duplicated == 0
    assert outcome.counted + outcome.dropped == outcome.sent


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


# -- 1. Redis goes away (or hangs) while the app tracks ----------------------------------------


@pytest.mark.parametrize(
    ("buffer_max", "flush_batch"),
    [(100_000, 2_000), (4_000, 500)],
    ids=["within-the-buffer-bound", "beyond-the-buffer-bound"],
)
def test_redis_stops_while_tracking_nothing_raises_and_the_buffer_arrives(
    buffer_max: int, flush_batch: int
) -> None:
    outcome = redis_outage(
        "stop",
        rate_per_s=5_000,
        outage_s=2.0,
        calm_s=1.0,
        buffer_max=buffer_max,
        flush_batch=flush_batch,
    )
    _exact(outcome)
    if buffer_max > outcome.sent:
        assert outcome.dropped == 0 and outcome.counted == outcome.sent
    else:  # ~10,000 events met a 4,000 bound: the oldest went (one batch was in flight)
        beyond = outcome.fault_events - buffer_max
        assert beyond - flush_batch <= outcome.dropped <= beyond + 1_000
    assert outcome.caller_p99_us is not None and outcome.caller_p99_us < 1_000
    assert outcome.caller_max_us is not None and outcome.caller_max_us < 1_000_000


@pytest.mark.parametrize("flush_mode", ["thread", "inline"])
def test_redis_hangs_while_tracking_no_call_waits_and_nothing_is_doubled(flush_mode: str) -> None:
    """A hung server takes the pushes in flight after it resumes; their retries must not count
    twice, and no track call waits on the network (inline: one 50 ms attempt per breaker)."""
    outcome = redis_outage(
        "hang", rate_per_s=5_000, outage_s=2.5, calm_s=1.0, hang=True, flush_mode=flush_mode
    )
    _exact(outcome)
    assert outcome.dropped == 0
    assert outcome.caller_p99_us is not None and outcome.caller_p99_us < 1_000
    assert outcome.caller_max_us is not None and outcome.caller_max_us < 1_000_000


# -- 2. aggregators SIGKILLed ---------------------------------------------------------------


def test_aggregators_killed_mid_batch_lose_and_double_nothing(settings: Settings) -> None:
    outcome = aggregator_kills(settings, events=20_000, kills=4, stream_s=3.0)
    _exact(outcome)
    assert outcome.counted == 20_000


# -- 3. concurrent workers under load ---------------------------------------------------------


def test_four_workers_under_load_count_exactly_and_alert_once(
    settings: Settings, slack: SlackStandIn
) -> None:
    outcome = concurrent_workers(
        settings, slack, per_producer=5_000, stream_s=3.0, memory_bound_mb=8.0
    )
    _exact(outcome)
    assert outcome.counted == 20_000
    assert (outcome.alerts_expected, outcome.alerts_delivered) == (3, 3)


def test_a_summary_can_be_read_while_every_shard_drains_a_backlog(settings: Settings) -> None:
    """What a check does after a worker outage: read the window while one aggregator per
    shard works off the backlog. Every read must succeed (read_window gives up after five
    optimistic attempts when lease lists keep changing)."""
    outcome = reads_during_backlog_drain(settings, backlog=100_000, duration_s=8.0)
    _exact(outcome)


@pytest.mark.parametrize("backlog", [60_000, 250_000], ids=["read-whole", "beyond-read-budget"])
def test_a_firing_alert_does_not_resolve_while_its_events_wait_in_a_backlog(
    settings: Settings, slack: SlackStandIn, backlog: int
) -> None:
    """Aggregation falls behind while newer raw events pile up on the alert's shard, beyond
    what a summary reads of a backlog in the second case. The events still in the window
    must be counted (or the summary must say part of the backlog went unread), and an alert
    firing on them must not be resolved (nor a resolved message sent)."""
    outcome = alert_under_backlog(settings, slack, backlog=backlog)
    _exact(outcome)
    lagging = backlog > settings.pending_threshold  # aggregation_lag fires as well
    assert outcome.alerts_expected == outcome.alerts_delivered == 1 + lagging


# -- 4. Slack outage ------------------------------------------------------------------------


def test_slack_outage_every_alert_delivered_once_after_recovery(settings: Settings) -> None:
    outcome = slack_outage(
        settings,
        fail_s=1.5,
        closed_s=1.5,
        alerts=6,
        backoff_s=0.1,
        max_backoff_s=0.8,
        tick_s=0.1,
    )
    assert outcome.problems == []
    assert outcome.alerts_expected == outcome.alerts_delivered == 7  # 6 firing, 1 resolved


# -- 5. broker for queue inspection unreachable ----------------------------------------------


@contextlib.contextmanager
def _broker(kind: str) -> Iterator[str]:
    scheme, how = kind.split("-")
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(blackhole_port()) if how == "silent" else free_port()
        if scheme == "redis":
            yield f"redis://:s3cret@127.0.0.1:{port}/0"
        else:
            yield f"amqp://guest:s3cret@127.0.0.1:{port}//"


@pytest.mark.parametrize("kind", ["redis-closed", "amqp-closed", "redis-silent", "amqp-silent"])
def test_unreachable_broker_alerts_and_the_other_checks_still_run(
    settings: Settings, kind: str
) -> None:
    with _broker(kind) as url:
        outcome = broker_unreachable(settings, url, kind)
    assert outcome.problems == []
    assert outcome.alerts_expected == outcome.alerts_delivered == 2
    assert outcome.counted == outcome.sent == 40


# -- 6. Redis restarted empty ------------------------------------------------------------------


def test_redis_restarted_empty_recovers_without_manual_steps() -> None:
    outcome = redis_restarted_empty(before=300, during=200, after=300)
    _exact(outcome)
    assert outcome.counted == 500
    assert outcome.alerts_expected == outcome.alerts_delivered == 3
