"""Hostile arguments to the calls of the kinds beyond requests and payments: the same checks
as the seed's two calls (a bad argument raises naming it, nothing is recorded), and 100k
distinct task, metric and alias names stay under their caps."""

from __future__ import annotations

import math
import time
from decimal import Decimal
from typing import Any

import pytest
import redis

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor

pytestmark = pytest.mark.timeout(120)


class StrSub(str):
    def __str__(self) -> str:
        return "other"


BAD_CALLS = [
    ("track_metric", ("m", -1.0), "value", ValueError),
    ("track_metric", ("m", math.nan), "value", ValueError),
    ("track_metric", ("m", math.inf), "value", ValueError),
    ("track_metric", ("m", 10**400), "value", ValueError),
    ("track_metric", ("m", "3"), "value", TypeError),
    ("track_metric", ("m", True), "value", TypeError),
    ("track_metric", ("m", Decimal("1.5")), "value", TypeError),
    ("track_metric", ("", 1.0), "name", ValueError),
    ("track_metric", ("x" * 201, 1.0), "name", ValueError),
    ("track_metric", ("\ud800", 1.0), "name", ValueError),
    ("track_metric", (b"m", 1.0), "name", TypeError),
    ("track_metric", (None, 1.0), "name", TypeError),
    ("track_event", ("e", 1), "ok", TypeError),
    ("track_event", ("e", None), "ok", TypeError),
    ("track_event", ("e", "yes"), "ok", TypeError),
    ("track_event", (7, True), "name", TypeError),
    ("track_cache", ("c", 0), "hit", TypeError),
    ("track_cache", ("", True), "name", ValueError),
    ("track_cache_lookups", ("c", 2, 3), "hits", ValueError),
    ("track_cache_lookups", ("c", -1, 0), "lookups", ValueError),
    ("track_cache_lookups", ("c", 1.0, 0), "lookups", TypeError),
    ("track_query", ("default", -0.1), "duration", ValueError),
    ("track_query", ("default", math.nan), "duration", ValueError),
    ("track_query", ("", 0.1), "alias", ValueError),
    ("track_task", ("t", "success"), "outcome", ValueError),
    ("track_task", ("", "s"), "task", ValueError),
    ("track_task", ("t", "s"), "runtime", ValueError, {"runtime": -1}),
    ("track_task", ("t", "s"), "queue_wait", TypeError, {"queue_wait": "1"}),
    ("track_task", ("t", "s"), "queue", TypeError, {"queue": 5}),
    ("track_metric", ("m", 1.0), "timestamp", ValueError, {"timestamp": -5}),
    ("track_event", ("e", True), "timestamp", TypeError, {"timestamp": "now"}),
    ("track_api_request", ("/x/", 0.1, 200), "queries", ValueError, {"queries": -1}),
    ("track_api_request", ("/x/", 0.1, 200), "queries", TypeError, {"queries": 1.5}),
]


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda c: f"{c[0]}-{c[2]}-{c[1]!r:.20}")
def test_bad_argument_raises_naming_it_and_records_nothing(
    settings: Settings, call: tuple[Any, ...]
) -> None:
    method, args, arg, error = call[:4]
    kwargs = call[4] if len(call) > 4 else {}
    monitor = MetricsMonitor(settings=settings)
    before = monitor.buffered()
    with pytest.raises(error) as info:
        getattr(monitor, method)(*args, **kwargs)
    assert arg in str(info.value)
    if method != "track_api_request":  # the request itself was valid and is recorded
        assert monitor.buffered() == before


def test_str_subclass_names_are_stored_as_validated(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    monitor.track_metric(StrSub("basket"), 2.0)
    monitor.track_event(StrSub("email"), True)
    summary = monitor.get_metrics_summary()
    assert set(summary["metrics"]) == {"basket", "email"}
    monitor.close()


def _footprint(client: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in client.scan_iter(match=prefix + "*", count=1000))


def test_100k_distinct_task_metric_and_alias_names_stay_under_their_caps(
    rclient: redis.Redis, settings: Settings
) -> None:
    n = 100_000
    at = (time.time() // 60 - 1) * 60 + 30  # the middle of the minute before this one
    s = settings.with_overrides(buffer_max=8 * n, flush_batch=20_000)
    monitor = MetricsMonitor(settings=s)
    for i in range(n):
        monitor.track_task(f"t.{i}", "s", runtime=0.1, queue=f"q{i}", timestamp=at)
        monitor.track_metric(f"m.{i}", 1.0, timestamp=at)
        monitor.track_query(f"db{i}", 0.01, timestamp=at)
        monitor.track_cache(f"c{i}", True, timestamp=at)
    assert monitor.flush(timeout=60)
    pending = monitor.get_metrics_summary(now=at)
    monitor.aggregate(now=at)
    aggregated = monitor.get_metrics_summary(now=at)
    monitor.close()
    for summary in (pending, aggregated):
        for section, cap, total in (
            ("tasks", s.max_tasks, "runs"),
            ("task_queues", s.max_aliases, "tasks"),
            ("metrics", s.max_metrics, "count"),
            ("db", s.max_aliases, "queries"),
            ("cache", s.max_aliases, "lookups"),
        ):
            names = summary[section]
            assert len(names) == cap + 1, section
            if summary is aggregated:  # (a summary reads at most 200,000 raw events)
                assert sum(v[total] for v in names.values()) == n, section
                assert names["__other__"][total] == n - cap, section
        assert summary["dropped_events"]["malformed"] == 0
    assert aggregated["pending_events"] == 0
    admitted = {
        group: rclient.scard(f"{s.key_prefix}{{meta}}:{group}")
        for group in ("tasks", "task_queues", "metrics", "db", "cache")
    }
    assert admitted == {
        "tasks": s.max_tasks,
        "task_queues": s.max_aliases,
        "metrics": s.max_metrics,
        "db": s.max_aliases,
        "cache": s.max_aliases,
    }
    assert _footprint(rclient, s.key_prefix) < 100 + s.shards  # + each shard's archive marks
