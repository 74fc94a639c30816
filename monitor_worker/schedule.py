"""The Celery configuration the package carries: JSON only, its own queue, the beat schedule.

Kept free of Celery imports so ``celeryconfig.py`` and tests can read it cheaply.
"""

from __future__ import annotations

from typing import Any

from .config import Settings

TASK_AGGREGATE = "monitor_worker.aggregate"
TASK_CHECK_ALERTS = "monitor_worker.check_alerts"
TASK_CHECK_QUEUES = "monitor_worker.check_queues"
TASK_DELIVER_ALERTS = "monitor_worker.deliver_alerts"
TASK_ARCHIVE = "monitor_worker.archive"
TASK_NAMES = (
    TASK_AGGREGATE,
    TASK_CHECK_ALERTS,
    TASK_CHECK_QUEUES,
    TASK_DELIVER_ALERTS,
    TASK_ARCHIVE,
)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """One entry per periodic task; each run expires after its interval so a worker that was
    down does not come back to a pile of stale runs."""

    def every(task: str, interval_s: float) -> dict[str, Any]:
        return {"task": task, "schedule": interval_s, "options": {"expires": interval_s}}

    return {
        "monitor-aggregate": every(TASK_AGGREGATE, settings.aggregate_interval_s),
        "monitor-check-alerts": every(TASK_CHECK_ALERTS, settings.check_interval_s),
        "monitor-check-queues": every(TASK_CHECK_QUEUES, settings.queue_check_interval_s),
        "monitor-deliver-alerts": every(TASK_DELIVER_ALERTS, settings.deliver_interval_s),
        "monitor-archive": every(TASK_ARCHIVE, settings.archive_interval_s),
    }


def celery_defaults(settings: Settings) -> dict[str, Any]:
    """Working defaults; a ``celeryconfig.py`` in the working directory overrides any of them."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.task_queue,
        "task_routes": {"monitor_worker.*": {"queue": settings.task_queue}},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "task_acks_late": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule(settings),
        "worker_hijack_root_logger": False,
    }
