"""What the integrations share: track calls that never raise into the host app.

An integration runs inside the host app's queries, cache calls and tasks, so a value it
cannot record (an alias over 200 characters, say) is logged, at most once a minute per kind,
and dropped; Redis faults never raise anyway (the tracker buffers).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

log = logging.getLogger("monitor_worker.integrations")
FAULT_LOG_INTERVAL_S = 60.0
_last_logged: dict[str, float] = {}


def monitor_or_default(monitor: MetricsMonitor | None) -> MetricsMonitor:
    """``monitor``, else ``monitor_worker.metrics_monitor`` (imported on first use)."""
    if monitor is not None:
        return monitor
    from .. import metrics_monitor

    return metrics_monitor


def record(monitor: MetricsMonitor | None, method: str, *args: Any, **kwargs: Any) -> None:
    """``monitor.<method>(*args, **kwargs)``, logging instead of raising."""
    try:
        getattr(monitor_or_default(monitor), method)(*args, **kwargs)
    except Exception as exc:  # the host app's call must go on whatever happens here
        fault(method, exc)


def fault(what: str, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _last_logged.get(what, -FAULT_LOG_INTERVAL_S) >= FAULT_LOG_INTERVAL_S:
        _last_logged[what] = now
        log.warning("%s: not recorded: %s: %s", what, type(exc).__name__, exc)
