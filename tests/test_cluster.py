"""The metrics store on a real local Redis Cluster of three masters (``MONITOR_REDIS_CLUSTER=1``).

Every Lua script and MULTI touches one hash slot (the ``{s<n>}``, ``{meta}``, ``{alerts}`` and
``{queues}`` tags); the shards spread over the masters.
"""

from __future__ import annotations

import multiprocessing
import random
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from redis.cluster import RedisCluster

from monitor_worker import alerting, checks, queues
from monitor_worker.config import Settings
from monitor_worker.errors import MonitorError
from monitor_worker.keys import Keys
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import Aggregator, Client, connect, pending_count, record_heartbeat
from monitor_worker.windows import bucket_of, window_start

from . import helpers
from .cluster import LocalCluster
from .conftest import free_port

CTX = multiprocessing.get_context("fork")
ENDPOINTS = [f"/api/e{i:03d}/" for i in range(100)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


BROKER = "amqp://guest:guest@127.0.0.1:5672//"  # the Celery broker never lives on the cluster


@pytest.fixture
def csettings(cluster: LocalCluster) -> Settings:
    """Cluster settings with a private key prefix (the cluster is dropped after the module)."""
    return Settings(
        redis_url=cluster.url,
        redis_url_explicit=True,
        redis_cluster=True,
        broker_url=BROKER,
        key_prefix=f"mwtest:{uuid.uuid4().hex[:12]}:",
        shards=8,
    )


@pytest.fixture
def rc(csettings: Settings) -> Iterator[Client]:
    client = connect(csettings)
    assert isinstance(client, RedisCluster)
    yield client
    client.close()


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start a forked process; any still running when the test ends is killed."""
    started: list[Any] = []

    def start(target: Any, *args: Any) -> Any:
        proc = CTX.Process(target=target, args=args)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def _events(seed: int, n: int, now: float) -> list[tuple[str, float, int, float]]:
    rng = random.Random(seed)
    return [
        (
            rng.choice(ENDPOINTS),
            rng.lognormvariate(-1.5, 0.8),
            rng.choice([200, 200, 200, 201, 404, 500, 503]),
            now - rng.uniform(0, 3000),
        )
        for _ in range(n)
    ]


def _reference(events: list[tuple[str, float, int, float]], now: float) -> dict[str, list[int]]:
    start, end = window_start(now, 3600), bucket_of(now)
    ref: dict[str, list[int]] = {}
    for endpoint, _, status, ts in events:
        if start <= bucket_of(ts) <= end:
            counts = ref.setdefault(endpoint, [0, 0])
            counts[0] += 1
            counts[1] += status >= 500
    return ref


def _assert_exact(summary: dict[str, Any], ref: dict[str, list[int]]) -> None:
    got = {ep: [s["total_requests"], s["error_count"]] for ep, s in summary["api"].items()}
    assert got == ref


# -- the cluster itself -----------------------------------------------------------------------


def test_the_local_cluster_has_three_masters_covering_every_slot(rc: Client) -> None:
    masters = rc.get_primaries()
    assert len(masters) == 3
    covered = sum(int(end) - int(start) + 1 for start, end in rc.cluster_slots())
    assert covered == 16384


def test_a_script_may_build_key_names_of_its_own_slot_only(rc: Client) -> None:
    """APPLY builds minute-bucket names from the shard base: the server allows that only
    inside the declared key's slot, so APPLY running here proves it stays in one slot."""
    script = rc.register_script("redis.call('SET', ARGV[1], '1') return 1")
    assert script(keys=["t:{s3}:roll"], args=["t:{s3}:m:123"]) == 1
    with pytest.raises(redis.ResponseError, match="non local key"):
        script(keys=["t:{s3}:roll"], args=["t:{s4}:m:123"])


# -- the pipeline end to end --------------------------------------------------------------------


def _produce(settings: Settings, seed: int, n: int, now: float) -> None:
    monitor = MetricsMonitor(settings=settings)
    for endpoint, rt, status, ts in _events(seed, n, now):
        monitor.track_api_request(endpoint, rt, status, timestamp=ts)
    for i in range(50):
        monitor.track_payment_failure(f"reason {i % 3}", 100, timestamp=now - i)
    assert monitor.close(timeout=30)


def _drain(settings: Settings, done: Any, drained: Any) -> None:
    client = connect(settings)
    agg = Aggregator(client, settings)
    total = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = agg.drain().events
        total += events
        if done.is_set() and pending_count(client, settings) == 0:
            break
        if not events:
            time.sleep(0.01)  # poll interval while the producers catch up
    drained.put(total)


def test_two_producers_two_aggregators_exact_summary_spread_over_masters(
    cluster: LocalCluster, csettings: Settings, rc: Client, spawn: Any
) -> None:
    now = time.time()
    done, drained = CTX.Event(), CTX.Queue()
    producers = [spawn(_produce, csettings, seed, 10_000, now) for seed in (1, 2)]
    drainers = [spawn(_drain, csettings, done, drained) for _ in range(2)]
    for proc in producers:
        proc.join(60)
        assert proc.exitcode == 0
    done.set()
    totals = [drained.get(timeout=60) for _ in drainers]
    for proc in drainers:
        proc.join(30)
        assert proc.exitcode == 0
    # every event was applied by exactly one of the two aggregators
    assert sum(totals) == 20_000 + 2 * 50
    monitor = MetricsMonitor(settings=csettings)
    summary = monitor.get_metrics_summary(now=now)
    assert summary["pending_events"] == 0
    _assert_exact(summary, _reference(_events(1, 10_000, now) + _events(2, 10_000, now), now))
    assert summary["payments"]["failures_last_hour"] == 100
    assert summary["payments"]["by_reason"] == {"reason 0": 34, "reason 1": 34, "reason 2": 32}
    monitor.close()

    # where the shards live: each master holds whole shards, and every master holds some
    keys = Keys(csettings.key_prefix, csettings.shards)
    shards_on: dict[int, set[int]] = {}
    for port in cluster.ports:
        node = redis.Redis(port=port)
        found = {
            int(m.group(1))
            for key in node.scan_iter(match=f"{csettings.key_prefix}{{s*", count=1000)
            if (m := re.search(rb"\{s(\d+)\}", key))
        }
        node.close()
        shards_on[port] = found
    assert all(shards_on.values()), shards_on
    assert sorted(s for found in shards_on.values() for s in found) == list(range(8))
    for sk in keys.all_shards():
        assert int(rc.execute_command("CLUSTER KEYSLOT", sk.roll)) == rc.keyslot(sk.raw)
        assert sk.shard in shards_on[rc.get_node_from_key(sk.roll).port]


def test_aggregation_killed_between_claim_and_apply(csettings: Settings, rc: Client) -> None:
    now = time.time()
    events = _events(7, 3_000, now)
    monitor = MetricsMonitor(settings=csettings)
    for endpoint, rt, status, ts in events:
        monitor.track_api_request(endpoint, rt, status, timestamp=ts)
    assert monitor.flush(10)
    Aggregator(rc, csettings).drain(stop_after_claim=True)  # claimed a batch, then "died"
    assert pending_count(rc, csettings) == len(events)
    _assert_exact(monitor.get_metrics_summary(now=now), _reference(events, now))
    Aggregator(rc, csettings).drain()  # the leased batch waits for its lease to run out
    assert pending_count(rc, csettings) > 0
    for sk in Keys(csettings.key_prefix, csettings.shards).all_shards():
        for member in rc.zrange(sk.leases, 0, -1):
            rc.zadd(sk.leases, {member: 0})
    result = Aggregator(rc, csettings).drain()
    assert result.reclaimed == 1
    assert pending_count(rc, csettings) == 0
    _assert_exact(monitor.get_metrics_summary(now=now), _reference(events, now))
    monitor.close()


def test_push_reloads_scripts_a_master_lost(csettings: Settings, rc: Client) -> None:
    monitor = MetricsMonitor(settings=csettings)
    monitor.track_api_request("/before/", 0.1, 200)
    assert monitor.flush(5)
    rc.script_flush()  # every master forgets its scripts (as after a restart or failover)
    for endpoint in ENDPOINTS:
        monitor.track_api_request(endpoint, 0.1, 200)
    assert monitor.flush(5) and monitor.faults == 0
    assert pending_count(rc, csettings) == 1 + len(ENDPOINTS)
    monitor.close()


def _dead_cluster() -> Settings:
    return Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_cluster=True,
        broker_url=BROKER,
        key_prefix="mwtest:dead:",
        flush_mode="inline",
        flush_batch=1,
    )


def test_unreachable_cluster_never_raises_into_the_app() -> None:
    """redis-py reports an unreachable cluster as RedisClusterException, not a RedisError."""
    monitor = MetricsMonitor(settings=_dead_cluster())
    monitor.track_api_request("/api/x/", 0.1, 200)  # flushes inline: must not raise
    assert monitor.faults >= 1 and monitor.buffered() == 1
    assert not monitor.flush(timeout=0.3)


def test_summary_of_an_unreachable_cluster_raises_monitor_error() -> None:
    with pytest.raises(MonitorError, match="unreachable"):
        MetricsMonitor(settings=_dead_cluster()).get_metrics_summary()


# -- alert state and queue samples ------------------------------------------------------------

T0 = 1_700_000_000.0
KEY = "error_rate:/api/x/"
FIRING = helpers.summary(T0, api={"/api/x/": helpers.endpoint_stats(errors=50)})


def _check_in_child(settings: Settings, barrier: Any, results: Any) -> None:
    client = connect(settings)
    barrier.wait(timeout=30)
    report = alerting.check(client, settings, FIRING, T0)
    results.put([entry["key"] for entry in report["fired"]])


def test_four_processes_claim_one_alert_and_one_message_is_sent(
    csettings: Settings, rc: Client, httpserver: HTTPServer, spawn: Any
) -> None:
    settings = csettings.with_overrides(slack_webhook_url=httpserver.url_for("/services/T/B/x"))
    httpserver.expect_request("/services/T/B/x", method="POST").respond_with_data("ok")
    barrier, results = CTX.Barrier(4), CTX.Queue()
    procs = [spawn(_check_in_child, settings, barrier, results) for _ in range(4)]
    fired = sorted(results.get(timeout=30) for _ in procs)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert fired == [[], [], [], [KEY]]
    assert alerting.outbox_size(rc, settings) == 1
    counts = alerting.deliver_due(rc, settings, T0, deadline_s=3.0, pace_s=0.01, backoff_s=0.05)
    assert counts == {"sent": 1, "retry": 0, "dropped": 0, "pending": 0}
    assert len(httpserver.log) == 1
    assert [a["key"] for a in alerting.firing_alerts(rc, settings)] == [KEY]
    throttled = alerting.check(rc, settings, FIRING, T0 + 30)
    assert [entry["key"] for entry in throttled["throttled"]] == [KEY]


def test_history_on_the_cluster_exact_once(csettings: Settings, rc: Client) -> None:
    """History keys carry one {h<n>} tag per shard: the archive's scripts run on a cluster."""
    monitor = MetricsMonitor(settings=csettings, redis=rc)
    now = time.time()
    t = now - 900
    events = [
        (ep, 0.1 + i % 7 * 0.05, 500 if i % 4 == 0 else 200) for i, ep in enumerate(ENDPOINTS * 3)
    ]
    for endpoint, rt, status in events:
        monitor.track_api_request(endpoint, rt, status, timestamp=t)
    assert monitor.flush(10)
    monitor.aggregate()
    assert monitor.archive(now=now).minutes == 8  # one minute in each shard
    assert monitor.archive(now=now).minutes == 0
    history = monitor.get_history(t - 60, step="1m", now=now)
    got = {ep: (rows[0]["requests"], rows[0]["errors"]) for ep, rows in history["api"].items()}
    want: dict[str, tuple[int, int]] = {}
    for endpoint, _, status in events:
        n, e = want.get(endpoint, (0, 0))
        want[endpoint] = (n + 1, e + (status >= 500))
    assert got == want
    monitor.close()


def test_queue_samples_status_and_health(csettings: Settings, rc: Client) -> None:
    settings = csettings.with_overrides(queues=("celery", "mail"))
    t0 = T0
    for i in range(4):
        lengths = {
            "celery": queues.QueueLength("celery", 10 * (i + 1), True, {"0": 10 * (i + 1)}),
            "mail": queues.QueueLength("mail", 0, False, {}),
        }
        queues.record_samples(rc, settings, lengths, t0 + 30 * i)
    report = queues.queue_report(rc, settings, t0 + 100)
    assert report["celery"]["length"] == 40 and report["celery"]["growing"] is True
    assert report["celery"]["growth_per_minute"] == pytest.approx(20.0)
    assert report["mail"]["length"] == 0
    status = queues.broker_status(rc, settings)
    assert status is not None and status["reachable"] and status["failures"] == 0
    queues.record_unreachable(rc, settings, "refused", t0 + 120)
    queues.record_unreachable(rc, settings, "refused", t0 + 150)
    status = queues.broker_status(rc, settings)
    assert status is not None and not status["reachable"]
    assert status["failures"] == 2 and status["since"] == t0 + 120

    monitor = MetricsMonitor(settings=settings)
    now = time.time()
    record_heartbeat(rc, settings, "worker", now)
    record_heartbeat(rc, settings, "beat", now)
    health = checks.health(monitor, now + 1)
    assert health["healthy"] is True and health["pending_events"] == 0
    monitor.close()
