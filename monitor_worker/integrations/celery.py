"""The host app's Celery tasks: runs, failures, retries, runtime and queue wait per task.

Usage, in the module that makes the host app's Celery app::

    from monitor_worker.integrations.celery import instrument
    instrument(app)

Through Celery's signals, in the publishing process and in the worker (prefork children,
threads and solo pools alike), with no Celery events, no extra process and no hostname or
task-id labels:

- ``before_task_publish`` stamps the publish time in a message header;
- ``task_prerun`` notes the start: queue wait = start - max(publish time, ETA), never below 0,
  and only for messages stamped by an instrumented publisher (no header, no wait recorded);
- ``task_postrun`` records the attempt: SUCCESS and FAILURE are runs (with their runtime),
  RETRY a retry; IGNORED and REJECTED count as neither;
- ``worker_process_shutdown`` (and ``worker_shutdown``) flush what the process buffered, so a
  prefork child that exits loses nothing.

A fault in here never reaches the task: it is logged (once a minute) and the event dropped.
"""

from __future__ import annotations

import threading
import time
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import (
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_process_shutdown,
    worker_shutdown,
)

from ..events import MAX_RESPONSE_TIME_S
from ._record import fault, monitor_or_default, record

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

HEADER = "monitor_published_at"  # unix time the message was published, stamped by the publisher
_OUTCOMES = {"SUCCESS": "s", "FAILURE": "f", "RETRY": "r"}
_INSTRUMENTED: weakref.WeakKeyDictionary[Celery, _Instrumentation] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def instrument(app: Celery, monitor: MetricsMonitor | None = None) -> None:
    """Record the tasks of ``app`` (once; a second call changes nothing). ``monitor``
    defaults to ``monitor_worker.metrics_monitor``."""
    with _LOCK:
        if app in _INSTRUMENTED:
            return
        _INSTRUMENTED[app] = inst = _Instrumentation(app, monitor)
    before_task_publish.connect(inst.on_publish, weak=False)
    task_prerun.connect(inst.on_prerun, weak=False)
    task_postrun.connect(inst.on_postrun, weak=False)
    worker_process_shutdown.connect(inst.on_shutdown, weak=False)
    worker_shutdown.connect(inst.on_shutdown, weak=False)


def queue_wait(started: float, published: Any, eta: Any) -> float | None:
    """Seconds from the later of publish time and ETA to ``started``, never below 0; None
    without a publish stamp (a message from an uninstrumented publisher)."""
    try:
        since = float(published)
    except (TypeError, ValueError):
        return None
    if eta:
        try:
            when = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            since = max(since, when.timestamp())
    return min(MAX_RESPONSE_TIME_S, max(0.0, started - since))


class _Instrumentation:
    def __init__(self, app: Celery, monitor: MetricsMonitor | None) -> None:
        self._app = weakref.ref(app)
        self._monitor = monitor
        # (task id, retries: a retry's next attempt may start before this one ends) ->
        # (perf_counter at start, queue wait or None, queue or None)
        self._started: dict[tuple[str, Any], tuple[float, float | None, str | None]] = {}

    def _ours(self, task: Any) -> bool:
        return getattr(task, "app", None) is self._app()

    def on_publish(self, headers: Any = None, **_: Any) -> None:
        if isinstance(headers, dict):
            headers[HEADER] = time.time()

    def on_prerun(self, task_id: str = "", task: Any = None, **_: Any) -> None:
        if not self._ours(task):
            return
        try:
            request = task.request
            delivery = getattr(request, "delivery_info", None) or {}
            queue = delivery.get("routing_key") or None
            wait = queue_wait(time.time(), getattr(request, HEADER, None), request.eta)
            self._started[task_id, request.retries] = (time.perf_counter(), wait, queue)
        except Exception as exc:  # never into the task
            fault("task_prerun", exc)

    def on_postrun(self, task_id: str = "", task: Any = None, state: Any = None, **_: Any) -> None:
        if not self._ours(task):
            return
        started = self._started.pop((task_id, getattr(task.request, "retries", None)), None)
        if started is None:
            return
        outcome = _OUTCOMES.get(str(state))
        if outcome is None:  # IGNORED, REJECTED: neither a run nor a retry
            return
        began, wait, queue = started
        runtime = None if outcome == "r" else min(MAX_RESPONSE_TIME_S, time.perf_counter() - began)
        record(
            self._monitor, "track_task", task.name, outcome,
            runtime=runtime, queue_wait=wait, queue=queue,
        )  # fmt: skip

    def on_shutdown(self, **_: Any) -> None:
        monitor_or_default(self._monitor).flush(timeout=2.0)
