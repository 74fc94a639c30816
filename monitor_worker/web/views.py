"""What the server shows, built from the store: one shared snapshot per view, at most
``MONITOR_WEB_CACHE_SECONDS`` old, so many viewers (and Prometheus) cost one read.

Each view is a plain dict ready for JSON; the API, the page and ``/metrics`` all read these,
so a new kind of metric is one more loader here and one more section in each reader.

Usage::

    views = Views(monitor)
    summary, generated_at = views.get("summary")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .. import alerting, checks, store, throttle
from ..config import BUCKET_S
from ..errors import MonitorError
from ..monitor import MetricsMonitor

T = TypeVar("T")
Loader = Callable[[MetricsMonitor, float], dict[str, Any]]


def load_summary(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    return monitor.get_metrics_summary(now=now)


def load_series(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    """Per-minute points of every endpoint and of payment failures over the window; minutes
    without requests (or failures) are left out."""
    minutes = _read(monitor, lambda client: store.read_series(client, monitor.settings, now))
    series: dict[str, list[dict[str, Any]]] = {}
    payments: list[dict[str, Any]] = []
    for bucket in sorted(minutes):
        window = minutes[bucket]
        t = bucket * BUCKET_S
        for endpoint, stats in window.api_section().items():
            series.setdefault(endpoint, []).append(
                {
                    "t": t,
                    "requests": stats["total_requests"],
                    "errors": stats["error_count"],
                    "error_rate": stats["error_rate"],
                    "avg_response_time": stats["avg_response_time"],
                    "p95_response_time": stats["p95_response_time"],
                }
            )
        failures = window.payments_section()["failures_last_hour"]
        if failures:
            payments.append({"t": t, "failures": failures})
    return {"step_seconds": BUCKET_S, "series": dict(sorted(series.items())), "payments": payments}


def load_alerts(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    def read(client: Any) -> dict[str, Any]:
        history = throttle.delivery_history(client, monitor.settings)
        return {
            "firing": alerting.firing_alerts(client, monitor.settings),
            "deliveries": history["recent"],
            "delivery_totals": history["totals"],
        }

    return _read(monitor, read)


def load_silences(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    silences = _read(monitor, lambda c: throttle.list_silences(c, monitor.settings, now))
    return {"silences": silences}


def load_health(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    return checks.health(monitor, now)


def load_counters(monitor: MetricsMonitor, now: float) -> dict[str, Any]:
    """The monotonic counters of ``/metrics``."""

    def read(client: Any) -> dict[str, Any]:
        totals = store.read_totals(client, monitor.settings)
        totals["alert_deliveries"] = throttle.delivery_history(client, monitor.settings)["totals"]
        return totals

    return _read(monitor, read)


def _read(monitor: MetricsMonitor, read: Callable[[Any], T]) -> T:
    try:
        return read(monitor.store())
    except store.REDIS_ERRORS as exc:
        raise MonitorError(store.describe_error(monitor.settings, exc)) from None


LOADERS: dict[str, Loader] = {
    "summary": load_summary,
    "series": load_series,
    "alerts": load_alerts,
    "silences": load_silences,
    "health": load_health,
    "counters": load_counters,
}


class Views:
    """Cached views of one store; thread-safe (handlers run in a thread pool).

    A view is read at most once per ``max_age_s`` (``MONITOR_WEB_CACHE_SECONDS``); callers
    arriving while it is being read wait for that read instead of starting their own.
    """

    def __init__(self, monitor: MetricsMonitor, max_age_s: float | None = None) -> None:
        self.monitor = monitor
        self.max_age_s = monitor.settings.web_cache_s if max_age_s is None else max_age_s
        self._locks = {name: threading.Lock() for name in LOADERS}
        self._cache: dict[str, tuple[float, float, dict[str, Any]]] = {}

    def get(self, name: str) -> tuple[dict[str, Any], float]:
        """The view ``name`` and the unix time it was generated; MonitorError when the store
        is unreachable."""
        with self._locks[name]:
            cached = self._cache.get(name)
            if cached is not None and time.monotonic() - cached[0] < self.max_age_s:
                return cached[2], cached[1]
            now = time.time()
            value = LOADERS[name](self.monitor, now)
            self._cache[name] = (time.monotonic(), now, value)
            return value, now

    def fresh(self, name: str, now: float) -> dict[str, Any]:
        """The view at ``now``, read now (never cached): ``summary?now=``."""
        return LOADERS[name](self.monitor, now)

    def forget(self, name: str) -> None:
        """Drop a cached view (after a change made through the server, e.g. a new silence)."""
        with self._locks[name]:
            self._cache.pop(name, None)
