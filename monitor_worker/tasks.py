"""Celery tasks: thin wiring of the modules below, no logic of their own.

Task names are fixed: ``monitor_worker.aggregate``, ``monitor_worker.check_alerts``,
``monitor_worker.check_queues``, ``monitor_worker.deliver_alerts``, ``monitor_worker.archive``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import metrics_monitor
from .celery import app
from .errors import HistoryStoreError
from .schedule import (
    TASK_AGGREGATE,
    TASK_ARCHIVE,
    TASK_CHECK_ALERTS,
    TASK_CHECK_QUEUES,
    TASK_DELIVER_ALERTS,
)
from .store import record_heartbeat

log = logging.getLogger("monitor_worker.tasks")


def _heartbeat() -> None:
    record_heartbeat(metrics_monitor.store(), metrics_monitor.settings, "worker", time.time())


@app.task(name=TASK_AGGREGATE, ignore_result=True)
def aggregate(shards: list[int] | None = None) -> dict[str, int]:
    """Drain raw events into buckets; bounded by the beat interval so runs never pile up.

    Called without ``shards`` (as beat does) it fans out one task per shard, so the worker
    processes of every worker host drain the shards in parallel.
    """
    _heartbeat()
    settings = metrics_monitor.settings
    if shards is None and settings.shards > 1:
        expires = settings.aggregate_interval_s
        for shard in range(settings.shards):
            aggregate.apply_async(kwargs={"shards": [shard]}, expires=expires)
        return {"events": 0, "batches": 0, "reclaimed": 0, "fanned_out": settings.shards}
    budget = max(1.0, 0.9 * settings.aggregate_interval_s)
    result = metrics_monitor.aggregate(shards=shards, budget_s=budget)
    return {"events": result.events, "batches": result.batches, "reclaimed": result.reclaimed}


@app.task(name=TASK_CHECK_ALERTS, ignore_result=True)
def check_alerts() -> dict[str, Any]:
    """Evaluate every rule on the current window; what is due goes to the outbox."""
    _heartbeat()
    result = metrics_monitor.check_alerts(deliver=False, aggregate=False, inspect=False)
    if result["fired"] or result["resolved"]:
        deliver_alerts.delay()
    return result


@app.task(name=TASK_CHECK_QUEUES, ignore_result=True)
def check_queues() -> dict[str, Any]:
    """Inspect the configured broker queues through kombu and record a sample of each."""
    _heartbeat()
    return metrics_monitor.check_queues()


@app.task(name=TASK_DELIVER_ALERTS, ignore_result=True)
def deliver_alerts() -> dict[str, int]:
    """Send what is due in the delivery outbox (Slack, or the log when no webhook is set)."""
    from . import checks

    _heartbeat()
    return checks.deliver(metrics_monitor, deadline_s=metrics_monitor.settings.deliver_interval_s)


@app.task(name=TASK_ARCHIVE, ignore_result=True)
def archive() -> dict[str, Any]:
    """Archive closed minutes into history; bounded by the beat interval. When the history
    store is down this logs one warning and the next run catches up."""
    _heartbeat()
    budget = max(1.0, 0.9 * metrics_monitor.settings.archive_interval_s)
    try:
        result = metrics_monitor.archive(budget_s=budget)
    except HistoryStoreError as exc:
        log.warning("archive: %s; the next run catches up", exc)
        return {"error": str(exc)}
    return {
        "minutes": result.minutes,
        "rows": result.rows,
        "gaps": result.gaps,
        "left": result.left,
    }
