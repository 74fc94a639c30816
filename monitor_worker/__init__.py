"""monitor-worker: track API requests and payment failures, aggregate them with Celery,
alert on Slack.

Usage::

    from monitor_worker import metrics_monitor

    metrics_monitor.track_api_request(endpoint="/api/review/today/", response_time=0.35,
                                      status_code=200)
    metrics_monitor.track_payment_failure(reason="Card declined", amount=10000)
    metrics_monitor.track_metric("pdf.render_seconds", 2.4)
    metrics_monitor.track_event("email.sent", ok=True)
    summary = metrics_monitor.get_metrics_summary()

Importing this package opens no connection, starts no thread and does not import Celery.
"""

from .errors import ConfigError, MonitorError, QueueInspectionError, SlackDeliveryError
from .monitor import MetricsMonitor

metrics_monitor = MetricsMonitor()
track_api_request = metrics_monitor.track_api_request
track_payment_failure = metrics_monitor.track_payment_failure
track_metric = metrics_monitor.track_metric
track_event = metrics_monitor.track_event
track_cache = metrics_monitor.track_cache
flush = metrics_monitor.flush

__all__ = [
    "ConfigError",
    "MetricsMonitor",
    "MonitorError",
    "QueueInspectionError",
    "SlackDeliveryError",
    "flush",
    "metrics_monitor",
    "track_api_request",
    "track_cache",
    "track_event",
    "track_metric",
    "track_payment_failure",
]
