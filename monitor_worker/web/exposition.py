"""``/metrics``: a client_python custom collector built at scrape time from the shared views.

Following the Prometheus exporter guidelines: counters are monotonic (kept in Redis, updated in
the same atomic step as the buckets), ratios are 0-1, times are seconds, no sample carries a
timestamp, and the window's P95 is a gauge of this process's view, not a summary to aggregate.
Each section is one function of the views, so a new kind of metric is one more function.

Usage::

    registry = metrics_registry(views)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = encoder(registry)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .views import Views

Section = Callable[[Views], Iterator[Metric]]


def _requests(views: Views) -> Iterator[Metric]:
    counters, _ = views.get("counters")
    requests = CounterMetricFamily(
        "monitor_requests", "API requests aggregated, by endpoint.", labels=["endpoint"]
    )
    errors = CounterMetricFamily(
        "monitor_request_errors",
        "API requests answered with an error status (>= MONITOR_ERROR_STATUS_MIN), by endpoint.",
        labels=["endpoint"],
    )
    for endpoint, n in sorted(counters["requests"].items()):
        requests.add_metric([endpoint], n)
        errors.add_metric([endpoint], counters["errors"].get(endpoint, 0))
    payments = CounterMetricFamily(
        "monitor_payment_failures", "Payment failures aggregated, by reason.", labels=["reason"]
    )
    for reason, n in sorted(counters["payment_failures"].items()):
        payments.add_metric([reason], n)
    deliveries = CounterMetricFamily(
        "monitor_alert_deliveries",
        "Alert messages by delivery outcome (sent, retrying, dropped).",
        labels=["outcome"],
    )
    for outcome, n in counters["alert_deliveries"].items():
        deliveries.add_metric([outcome], n)
    yield from (requests, errors, payments, deliveries)


def _window(views: Views) -> Iterator[Metric]:
    summary, _ = views.get("summary")
    families = {
        "requests": GaugeMetricFamily(
            "monitor_window_requests", "API requests in the sliding window.", labels=["endpoint"]
        ),
        "ratio": GaugeMetricFamily(
            "monitor_window_error_ratio",
            "Share of the window's requests that were errors (0-1).",
            labels=["endpoint"],
        ),
        "avg": GaugeMetricFamily(
            "monitor_window_response_time_avg_seconds",
            "Average response time over the window.",
            labels=["endpoint"],
        ),
        "p95": GaugeMetricFamily(
            "monitor_window_response_time_p95_seconds",
            "95th percentile response time over the window (within 1 %).",
            labels=["endpoint"],
        ),
    }
    for endpoint, s in summary["api"].items():
        families["requests"].add_metric([endpoint], s["total_requests"])
        families["ratio"].add_metric([endpoint], s["error_rate"] / 100.0)
        families["avg"].add_metric([endpoint], s["avg_response_time"])
        if s["p95_response_time"] is not None:
            families["p95"].add_metric([endpoint], s["p95_response_time"])
    yield from families.values()
    pending = GaugeMetricFamily(
        "monitor_pending_events", "Raw events tracked and not aggregated yet."
    )
    pending.add_metric([], summary["pending_events"])
    yield pending


def _queues(views: Views) -> Iterator[Metric]:
    summary, _ = views.get("summary")
    length = GaugeMetricFamily(
        "monitor_queue_length", "Messages waiting in a broker queue.", labels=["queue"]
    )
    growth = GaugeMetricFamily(
        "monitor_queue_growth_per_minute",
        "Slope of the queue's length over the last 5 minutes, in messages per minute.",
        labels=["queue"],
    )
    for queue, q in summary["celery"].items():
        length.add_metric([queue], q["length"])
        if q["growth_per_minute"] is not None:
            growth.add_metric([queue], q["growth_per_minute"])
    yield from (length, growth)


def _alerts(views: Views) -> Iterator[Metric]:
    alerts, _ = views.get("alerts")
    firing = GaugeMetricFamily(
        "monitor_alert_firing", "1 while the alert is firing.", labels=["key"]
    )
    for alert in alerts["firing"]:
        firing.add_metric([alert["key"]], 1)
    yield firing


def _health(views: Views) -> Iterator[Metric]:
    health, _ = views.get("health")
    outbox = GaugeMetricFamily(
        "monitor_outbox_depth", "Alert messages waiting to be delivered to Slack."
    )
    outbox.add_metric([], health["outbox"])
    ages = GaugeMetricFamily(
        "monitor_heartbeat_age_seconds",
        "Seconds since the worker or beat was last seen (absent: never seen).",
        labels=["process"],
    )
    for process in ("worker", "beat"):
        age = health[f"{process}_seen_s_ago"]
        if age is not None:
            ages.add_metric([process], age)
    yield from (outbox, ages)


def _gauges(
    rows: Mapping[str, Mapping[str, Any]],
    label: str,
    specs: tuple[tuple[str, str, str, float], ...],
) -> Iterator[Metric]:
    """One gauge family per (metric name, help, summary field, scale) over ``rows`` (label
    value -> its summary entry); a field that is None (nothing to go on) adds no sample."""
    for name, help_, key, scale in specs:
        family = GaugeMetricFamily(name, help_, labels=[label])
        for value_of_label, row in rows.items():
            value = row.get(key)
            if value is not None:
                family.add_metric([value_of_label], value * scale)
        yield family


_TASK_GAUGES = (
    ("monitor_task_runs", "Task runs (success or failure) in the sliding window.", "runs", 1),
    ("monitor_task_failures", "Task runs that failed in the sliding window.", "failures", 1),
    (
        "monitor_task_retries",
        "Task attempts that raised Retry in the sliding window.",
        "retries",
        1,
    ),
    (
        "monitor_task_failure_ratio",
        "Share of the window's runs that failed (0-1).",
        "failure_rate",
        0.01,
    ),
    ("monitor_task_runtime_avg_seconds", "Average runtime of the window's runs.", "avg_runtime", 1),
    ("monitor_task_runtime_p95_seconds", "95th percentile runtime (within 1 %).", "p95_runtime", 1),
    (
        "monitor_task_wait_avg_seconds",
        "Average queue wait of the window's attempts.",
        "avg_queue_wait",
        1,
    ),
    (
        "monitor_task_wait_p95_seconds",
        "95th percentile queue wait (within 1 %).",
        "p95_queue_wait",
        1,
    ),
)
_TASK_QUEUE_GAUGES = (
    ("monitor_task_queue_runs", "Task runs delivered from the queue in the window.", "tasks", 1),
    (
        "monitor_task_queue_wait_avg_seconds",
        "Average queue wait of the queue's tasks.",
        "avg_queue_wait",
        1,
    ),
    (
        "monitor_task_queue_wait_p95_seconds",
        "95th percentile queue wait of the queue's tasks.",
        "p95_queue_wait",
        1,
    ),
)
_DB_GAUGES = (
    ("monitor_db_queries", "Database queries in the sliding window.", "queries", 1),
    ("monitor_db_query_errors", "Database queries that raised, in the window.", "errors", 1),
    (
        "monitor_db_query_time_avg_seconds",
        "Average query time over the window.",
        "avg_query_time",
        1,
    ),
    (
        "monitor_db_query_time_p95_seconds",
        "95th percentile query time (within 1 %).",
        "p95_query_time",
        1,
    ),
)
_CACHE_GAUGES = (
    ("monitor_cache_lookups", "Cache keys looked up in the sliding window.", "lookups", 1),
    ("monitor_cache_hits", "Cache keys found in the sliding window.", "hits", 1),
    ("monitor_cache_hit_ratio", "Share of the window's lookups that hit (0-1).", "hit_rate", 0.01),
)
_METRIC_GAUGES = (
    ("monitor_metric_count", "Values or events of a custom metric in the window.", "count", 1),
    ("monitor_metric_avg", "Average of a value metric over the window.", "avg", 1),
    ("monitor_metric_p95", "95th percentile of a value metric (within 1 %).", "p95", 1),
    ("monitor_metric_max", "Largest value of a value metric (within 1 %).", "max", 1),
    ("monitor_metric_ok", "Successes of an event metric in the window.", "ok", 1),
    (
        "monitor_metric_ok_ratio",
        "Share of an event metric's events that succeeded (0-1).",
        "ok_rate",
        0.01,
    ),
)
_QUERY_GAUGES = (
    (
        "monitor_window_queries_avg",
        "Database queries per request over the window.",
        "avg_queries",
        1,
    ),
    (
        "monitor_window_queries_p95",
        "95th percentile of queries per request (within 1 %).",
        "p95_queries",
        1,
    ),
)


def _kinds(views: Views) -> Iterator[Metric]:
    """Celery tasks, task queues, databases, caches, custom metrics, queries per request."""
    summary, _ = views.get("summary")
    yield from _gauges(summary.get("tasks") or {}, "task", _TASK_GAUGES)
    yield from _gauges(summary.get("task_queues") or {}, "queue", _TASK_QUEUE_GAUGES)
    yield from _gauges(summary.get("db") or {}, "alias", _DB_GAUGES)
    yield from _gauges(summary.get("cache") or {}, "alias", _CACHE_GAUGES)
    yield from _gauges(summary.get("metrics") or {}, "name", _METRIC_GAUGES)
    yield from _gauges(summary.get("api") or {}, "endpoint", _QUERY_GAUGES)


SECTIONS: tuple[Section, ...] = (_requests, _window, _kinds, _queues, _alerts, _health)
METRICS_VIEWS = ("counters", "summary", "alerts", "health")  # the views the sections read


class MonitorCollector(Collector):
    """Yields every section's metric families, read from the views at scrape time."""

    def __init__(self, views: Views, sections: tuple[Section, ...] = SECTIONS) -> None:
        self.views = views
        self.sections = sections

    def collect(self) -> Iterator[Metric]:
        for section in self.sections:
            yield from section(self.views)


def metrics_registry(views: Views) -> CollectorRegistry:
    """A registry holding only the monitor's collector (no process or GC metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(views))
    return registry
