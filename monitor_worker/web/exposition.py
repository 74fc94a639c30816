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

from collections.abc import Callable, Iterator

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


SECTIONS: tuple[Section, ...] = (_requests, _window, _queues, _alerts, _health)
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
