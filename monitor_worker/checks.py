"""The checks operators and beat run: thin orchestration of store, queues and alerting."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import alerting, queues, throttle
from .errors import MonitorError
from .store import REDIS_ERRORS, describe_error, pending_count, read_heartbeats

if TYPE_CHECKING:
    from .monitor import MetricsMonitor

log = logging.getLogger("monitor_worker.checks")


def check_queues(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    """Inspect the configured queues and record a sample each (the ``check_queues`` task)."""
    settings = monitor.settings
    try:
        lengths = queues.check_queues(monitor.store(), settings, now)
    except REDIS_ERRORS as exc:
        raise MonitorError(describe_error(settings, exc)) from None
    if lengths is None:
        status = queues.broker_status(monitor.store(), settings) or {}
        return {"reachable": False, "error": status.get("error")}
    return {
        "reachable": True,
        "queues": queues.queues_json(lengths, settings.inspected_broker_url, now),
    }


def run_check(
    monitor: MetricsMonitor,
    now: float,
    *,
    deliver: bool = True,
    aggregate: bool = True,
    inspect: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Aggregate, inspect queues, evaluate every rule, then deliver what is due in-process
    for at most ``MONITOR_CHECK_DELIVERY_TIMEOUT`` (the rest stays in the outbox)."""
    settings = monitor.settings
    client = monitor.store()
    errors: list[dict[str, Any]] = []
    if aggregate:
        monitor.aggregate(budget_s=settings.check_delivery_timeout_s)
    if inspect:
        try:
            if queues.check_queues(client, settings, now) is None:
                status = queues.broker_status(client, settings) or {}
                errors.append({"key": "broker_unreachable", "error": status.get("error")})
        except REDIS_ERRORS as exc:
            raise MonitorError(describe_error(settings, exc)) from None
    return _evaluate(monitor, now, errors, deliver=deliver)


def check_measured_queue(
    monitor: MetricsMonitor, queue_name: str, queue_length: int, now: float
) -> dict[str, list[dict[str, Any]]]:
    """Record a length a job measured itself, then evaluate and deliver like ``check``."""
    if not isinstance(queue_name, str) or not queue_name:
        raise ValueError("queue_name must be a non-empty str")
    if isinstance(queue_length, bool) or not isinstance(queue_length, int) or queue_length < 0:
        raise ValueError("queue_length must be an int >= 0")
    length = queues.QueueLength(queue_name, queue_length, queue_length > 0, {})
    settings = monitor.settings
    errors: list[dict[str, Any]] = []
    try:
        if queue_name in settings.queues or queues.admit_measured(
            monitor.store(), settings, queue_name, now
        ):
            queues.record_samples(
                monitor.store(), settings, {queue_name: length}, now, mark_reachable=False
            )
        else:
            why = (
                f"queue_name: {settings.max_queues} measured queues are kept already "
                "(MONITOR_MAX_QUEUES); this one is not recorded"
            )
            log.warning("%s: %s", queue_name, why)
            errors.append({"key": f"celery_queue:{queue_name}", "error": why})
    except REDIS_ERRORS as exc:
        raise MonitorError(describe_error(settings, exc)) from None
    return _evaluate(monitor, now, errors, deliver=True)


def _evaluate(
    monitor: MetricsMonitor,
    now: float,
    errors: list[dict[str, Any]],
    *,
    deliver: bool,
) -> dict[str, list[dict[str, Any]]]:
    settings = monitor.settings
    summary = monitor.get_metrics_summary(now=now)
    try:
        report = alerting.check(monitor.store(), settings, summary, now)
        if deliver and (
            report["fired"] or report["resolved"] or alerting.outbox_size(monitor.store(), settings)
        ):
            alerting.deliver_due(
                monitor.store(), settings, deadline_s=settings.check_delivery_timeout_s
            )
    except REDIS_ERRORS as exc:
        raise MonitorError(describe_error(settings, exc)) from None
    report["errors"].extend(errors)
    return report


def deliver(monitor: MetricsMonitor, *, deadline_s: float) -> dict[str, int]:
    """Send what is due in the outbox (the ``deliver_alerts`` task)."""
    try:
        return alerting.deliver_due(monitor.store(), monitor.settings, deadline_s=deadline_s)
    except REDIS_ERRORS as exc:
        raise MonitorError(describe_error(monitor.settings, exc)) from None


def health(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    """Whether beat and a worker were seen recently, the backlog (``pending_events``), the
    outbox (its depth and its oldest entry's age) and the last Slack error."""
    settings = monitor.settings
    client = monitor.store()
    try:
        beats = read_heartbeats(client, settings)
        pending = pending_count(client, settings)
        outbox = alerting.outbox_size(client, settings)
        oldest = throttle.oldest_undelivered(client, settings)
        last_error = throttle.delivery_history(client, settings)["last_error"]
    except REDIS_ERRORS as exc:
        raise MonitorError(describe_error(settings, exc)) from None
    # beat sends aggregate every interval; allow three missed runs (at least a minute)
    stale_s = max(60.0, 3 * settings.aggregate_interval_s)
    ages = {who: (None if ts is None else round(now - ts, 1)) for who, ts in beats.items()}
    alive = {who: age is not None and age <= stale_s for who, age in ages.items()}
    backlog_ok = pending <= settings.pending_threshold
    return {
        "healthy": alive["worker"] and alive["beat"] and backlog_ok,
        "worker_seen_s_ago": ages["worker"],
        "beat_seen_s_ago": ages["beat"],
        "pending_events": pending,
        "outbox": outbox,
        "outbox_oldest_s": None if oldest is None else round(now - oldest["created"], 1),
        "last_slack_error": last_error,
    }
