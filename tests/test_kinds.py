"""Tasks, database queries, cache lookups and custom metrics through the whole pipeline:
tracked, pushed to the real Redis, aggregated exactly once, read back through the window."""

from __future__ import annotations

import math
import random
import time

import pytest
import redis

from monitor_worker.config import Settings
from monitor_worker.events import encode_chunk, encode_runs, task_name
from monitor_worker.fold import fold
from monitor_worker.keys import Keys
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.windows import bin_of, bucket_of

pytestmark = pytest.mark.timeout(60)


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _close(got: float | None, want: float) -> bool:
    return got is not None and abs(got - want) <= 0.01 * want + 1e-9


@pytest.fixture
def monitor(settings: Settings) -> MetricsMonitor:
    return MetricsMonitor(settings=settings)


def _summary_both_ways(monitor: MetricsMonitor, now: float) -> list[dict[str, object]]:
    """The window read with the events still raw, then again once aggregated."""
    assert monitor.flush(10)
    raw = monitor.get_metrics_summary(now)
    monitor.aggregate(now=now)
    return [raw, monitor.get_metrics_summary(now)]


def test_tasks_exact_counts_and_percentiles(monitor: MetricsMonitor) -> None:
    now = time.time()
    rng = random.Random(7)
    runtimes = [rng.uniform(0.01, 3.0) for _ in range(300)]
    waits = [rng.uniform(0.0, 20.0) for _ in range(300)]
    for i, (rt, wait) in enumerate(zip(runtimes, waits, strict=True)):
        outcome = "f" if i % 10 == 0 else "s"
        monitor.track_task("app.charge", outcome, runtime=rt, queue_wait=wait, queue="billing")
    for _ in range(7):
        monitor.track_task("app.charge", "r", queue_wait=1.0, queue="billing")
    monitor.track_task("app.mail", "s", runtime=0.5, queue="emails")  # no wait header
    for summary in _summary_both_ways(monitor, now):
        tasks = summary["tasks"]
        assert isinstance(tasks, dict)
        charge = tasks["app.charge"]
        assert charge["runs"] == 300
        assert charge["failures"] == 30
        assert charge["failure_rate"] == 10.0
        assert charge["retries"] == 7
        assert charge["queue"] == "billing"
        assert math.isclose(charge["avg_runtime"], sum(runtimes) / 300, rel_tol=1e-9)
        assert _close(charge["p95_runtime"], _nearest_rank(runtimes, 0.95))
        all_waits = [*waits, *[1.0] * 7]
        assert math.isclose(charge["avg_queue_wait"], sum(all_waits) / 307, rel_tol=1e-9)
        assert _close(charge["p95_queue_wait"], _nearest_rank(all_waits, 0.95))
        mail = tasks["app.mail"]
        assert (mail["runs"], mail["avg_queue_wait"], mail["p95_queue_wait"]) == (1, None, None)
        queues = summary["task_queues"]
        assert isinstance(queues, dict)
        assert queues["billing"]["tasks"] == 300
        assert _close(queues["billing"]["p95_queue_wait"], _nearest_rank(all_waits, 0.95))
        assert queues["emails"] == {"tasks": 1, "avg_queue_wait": None, "p95_queue_wait": None}


def test_db_cache_metrics_and_request_queries(monitor: MetricsMonitor) -> None:
    now = time.time()
    durations = [0.001 * (i + 1) for i in range(200)]
    for i, d in enumerate(durations):
        monitor.track_query("default", d, ok=i % 50 != 0)
    for hit in [True] * 30 + [False] * 10:
        monitor.track_cache("sessions", hit)
    monitor.track_cache_lookups("sessions", 10, 4)
    values = [float(v) for v in range(1, 1001)]
    for v in values:
        monitor.track_metric("pdf.render_seconds", v)
    for i in range(50):
        monitor.track_event("email.sent", ok=i % 5 != 0)
    for _ in range(4):
        monitor.track_api_request("/one/", 0.1, 200, queries=1)
    for _ in range(3):
        monitor.track_api_request("/many/", 0.1, 200, queries=25)
    monitor.track_api_request("/many/", 0.1, 200, queries=26)
    monitor.track_api_request("/untracked/", 0.1, 200)
    for summary in _summary_both_ways(monitor, now):
        db = summary["db"]
        assert isinstance(db, dict)
        assert db["default"]["queries"] == 200
        assert db["default"]["errors"] == 4
        assert math.isclose(db["default"]["avg_query_time"], sum(durations) / 200, rel_tol=1e-9)
        assert _close(db["default"]["p95_query_time"], _nearest_rank(durations, 0.95))
        assert summary["cache"] == {"sessions": {"lookups": 50, "hits": 34, "hit_rate": 68.0}}
        metrics = summary["metrics"]
        assert isinstance(metrics, dict)
        pdf = metrics["pdf.render_seconds"]
        assert (pdf["kind"], pdf["count"], pdf["avg"]) == ("value", 1000, 500.5)
        assert _close(pdf["p95"], 950.0)
        assert _close(pdf["max"], 1000.0)
        assert metrics["email.sent"] == {"kind": "ratio", "count": 50, "ok": 40, "ok_rate": 80.0}
        api = summary["api"]
        assert isinstance(api, dict)
        assert api["/one/"]["avg_queries"] == 1.0
        assert api["/many/"]["avg_queries"] == 25.25
        assert _close(api["/many/"]["p95_queries"], 26.0)
        assert "avg_queries" not in api["/untracked/"]
        assert api["/many/"]["total_requests"] == 4


def test_sections_leave_the_window_and_the_roll(
    monitor: MetricsMonitor, settings: Settings, rclient: redis.Redis
) -> None:
    t0 = time.time() - 10
    monitor.track_task("app.old", "s", runtime=0.1, queue_wait=0.5, queue="q", timestamp=t0)
    monitor.track_metric("m", 1.0, timestamp=t0)
    monitor.track_cache("c", True, timestamp=t0)
    assert monitor.flush(10)
    monitor.aggregate(now=t0 + 1)
    assert monitor.get_metrics_summary(t0 + 1)["tasks"]["app.old"]["runs"] == 1
    later = t0 + settings.window_s + 120
    monitor.aggregate(now=later)
    summary = monitor.get_metrics_summary(later)
    assert (summary["tasks"], summary["task_queues"], summary["metrics"], summary["cache"]) == (
        {},
        {},
        {},
        {},
    )
    for sk in Keys(settings.key_prefix, settings.shards).all_shards():
        assert set(rclient.hkeys(sk.roll)) <= {b"_:start"}


def test_caps_fold_names_into_other(settings: Settings) -> None:
    capped = settings.with_overrides(max_tasks=3, max_metrics=2, max_aliases=2)
    monitor = MetricsMonitor(settings=capped)
    now = time.time()
    for i in range(10):
        monitor.track_task(f"task.{i}", "s", runtime=0.1, queue=f"queue{i}")
        monitor.track_metric(f"metric.{i}", 1.0)
        monitor.track_query(f"db{i}", 0.01)
        monitor.track_cache(f"cache{i}", True)
    for summary in _summary_both_ways(monitor, now):
        for section, cap in (
            ("tasks", 3),
            ("metrics", 2),
            ("db", 2),
            ("cache", 2),
            ("task_queues", 2),
        ):
            names = summary[section]
            assert isinstance(names, dict)
            assert len(names) == cap + 1, (section, names)
            assert "__other__" in names
        tasks = summary["tasks"]
        assert isinstance(tasks, dict)
        assert sum(t["runs"] for t in tasks.values()) == 10
        db = summary["db"]
        assert isinstance(db, dict)
        assert sum(d["queries"] for d in db.values()) == 10


def _chunk(kind: str, name: str, *values: object, ts: float | None = None) -> bytes:
    """One raw element of one event of ``kind``, as the flusher writes it."""
    at = time.time() if ts is None else ts
    return encode_chunk([encode_runs(kind, [(name, [(kind, at, name, *values)])])], 1)


def test_fold_skips_malformed_events_of_each_kind() -> None:
    now = time.time()
    nan = math.nan
    good = [
        _chunk("t", task_name("t", "q"), 0, 0.1, 0.2),
        _chunk("t", task_name("t", ""), 2, nan, nan),  # a retry, no queue, no wait
        _chunk("d", "db", 0.1, 1),
        _chunk("k", "c", 2, 1),
        _chunk("v", "v", 3.0),
        _chunk("r", "r", 0),
        _chunk("n", "/e/", 3),
    ]
    bad = [
        _chunk("t", task_name("t", "q"), 3, 0.1, 0.2),  # unknown outcome
        _chunk("t", "9:q", 0, 0.1, 0.2),  # queue length past the name
        _chunk("t", "t", 0, 0.1, 0.2),  # not a task name
        _chunk("t", task_name("t", "q"), 0, -1.0, nan),  # negative runtime
        _chunk("t", task_name("t", "q"), 0, 0.1, math.inf),
        _chunk("d", "db", 0.1, 2),  # ok neither 0 nor 1
        _chunk("d", "db", nan, 1),
        _chunk("k", "c", 1, 2),  # more hits than lookups
        _chunk("v", "v", nan),
        _chunk("v", "v", 1e300),
        _chunk("r", "r", 7),
        _chunk("n", "/e/", 2**32 - 1),
        _chunk("v", "v", 1.0, ts=-5.0),  # no time
        _chunk("v", "x" * 201, 1.0),  # a name too long
    ]
    delta = fold(
        good + bad,
        now=now,
        error_status_min=500,
        threshold_s=2.0,
        oldest_bucket=bucket_of(now) - 60,
    )
    assert delta.counters[bucket_of(now), "malformed"] == len(bad)
    assert {(head, name) for _, head, name in delta.stats} == {
        ("tn", "t"),
        ("un", "q"),
        ("dn", "db"),
        ("kl", "c"),
        ("vn", "v"),
        ("rn", "r"),
        ("qn", "/e/"),
    }
    assert delta.stats[bucket_of(now), "tn", "t"] | {} == {
        "tn": 2,
        "tr": 1,
        "ty": 1,
        "tt": 0.1,
        "th": {bin_of(0.1): 1},
        "tw": 1,
        "tx": 0.2,
        "tb": {bin_of(0.2): 1},
        "tq": "q",
    }


def test_summary_tables_show_each_kind(monitor: MetricsMonitor) -> None:
    from monitor_worker.report import format_summary

    monitor.track_task("app.charge", "f", runtime=0.25, queue_wait=1.5, queue="billing")
    monitor.track_query("reports", 0.02, ok=False)
    monitor.track_cache("sessions", True)
    monitor.track_metric("basket", 3.0)
    monitor.track_event("email.sent", ok=False)
    monitor.track_api_request("/many/", 0.1, 200, queries=25)
    text = format_summary(monitor.get_metrics_summary())
    for line in (
        "app.charge",
        "billing",
        "reports",
        "sessions",
        "basket",
        "ok rate 0.00 %",
        "avg queries",
    ):
        assert line in text, (line, text)
    lines = text.splitlines()
    task_row = next(row for row in lines if row.startswith("app.charge"))
    assert task_row.split()[1:5] == ["1", "1", "100.00", "0"]  # runs, failures, %, retries
    cache_row = next(row for row in lines if row.startswith("sessions"))
    assert cache_row.split()[1:] == ["1", "1", "100.00"]
