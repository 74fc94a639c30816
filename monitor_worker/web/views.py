"""What the server shows, built from the store: one shared snapshot per view, at most
``MONITOR_WEB_CACHE_SECONDS`` old, so many viewers (and Prometheus) cost one read.

Each view is a plain dict ready for JSON; the API, the page and ``/metrics`` all read these,
so a new kind of metric is one more loader here and one more section in each reader.

Usage::

    views = Views(monitor)
    summary, generated_at = views.get("summary")
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .. import alerting, checks, store, throttle
from ..config import BUCKET_S
from ..errors import MonitorError
from ..monitor import MetricsMonitor
from ..windows import ApiAcc, Window

log = logging.getLogger("monitor_worker.web")
T = TypeVar("T")
Loader = Callable[["Views", float], dict[str, Any]]


def load_summary(views: Views, now: float) -> dict[str, Any]:
    return views.monitor.get_metrics_summary(now=now)


def load_series(views: Views, now: float) -> dict[str, Any]:
    """Per-minute points of every endpoint and of payment failures over the window; minutes
    without requests (or failures) are left out."""
    monitor = views.monitor
    return views.series.build(
        lambda known: _read(
            monitor, lambda client: store.read_minutes(client, monitor.settings, now, known)
        )
    )


def _point(t: int, acc: ApiAcc) -> dict[str, Any]:
    stats = acc.stats()
    p95 = stats["p95_response_time"]
    return {  # rounded: the sketch is within 1 %, and 60,000 points make a large body
        "t": t,
        "requests": stats["total_requests"],
        "errors": stats["error_count"],
        "error_rate": round(stats["error_rate"], 4),
        "avg_response_time": round(stats["avg_response_time"], 6),
        "p95_response_time": None if p95 is None else round(p95, 6),
    }


class SeriesCache:
    """Builds the series view, reading and parsing each bucket once per version: a closed
    minute rarely changes, so a new snapshot reads the current minute and whatever changed
    (APPLY bumps a bucket's version), not the hour."""

    def __init__(self) -> None:
        # (shard, bucket) -> (version, endpoint -> (acc, point), payment failures)
        self._parsed: dict[tuple[int, int], tuple[str, dict[str, Any], int]] = {}
        self._lock = threading.Lock()

    def build(
        self, read_minutes: Callable[[dict[tuple[int, int], str]], store.MinutesRead]
    ) -> dict[str, Any]:
        with self._lock:
            known = {key: entry[0] for key, entry in self._parsed.items() if entry[0]}
            read = read_minutes(known)
            parsed = {}
            for key, version in read.versions.items():
                fields = read.hashes.get(key)
                if fields is not None:
                    parsed[key] = self._parse(key, version, fields)
                elif key in self._parsed:
                    parsed[key] = self._parsed[key]
            self._parsed = parsed  # buckets gone from the window are forgotten
        pending: dict[int, list[tuple[str, ApiAcc]]] = {}
        pending_pay: dict[int, int] = {}
        if read.pending is not None:
            for (bucket, endpoint), acc in read.pending.api.items():
                pending.setdefault(bucket, []).append((endpoint, acc))
            for (bucket, _), pay in read.pending.pay.items():
                pending_pay[bucket] = pending_pay.get(bucket, 0) + pay.count
        shards_of: dict[int, list[dict[str, Any]]] = {}
        failures_of: dict[int, int] = {}
        for (_, bucket), (_, api, failures) in sorted(parsed.items()):
            shards_of.setdefault(bucket, []).append(api)
            failures_of[bucket] = failures_of.get(bucket, 0) + failures
        series: dict[str, list[dict[str, Any]]] = {}
        payments: list[dict[str, Any]] = []
        for bucket in range(read.start, read.end + 1):
            t = bucket * BUCKET_S
            parts: dict[str, list[tuple[ApiAcc, dict[str, Any] | None]]] = {}
            for api in shards_of.get(bucket, ()):
                for endpoint, (acc, point) in api.items():
                    parts.setdefault(endpoint, []).append((acc, point))
            for endpoint, acc in pending.get(bucket, ()):
                parts.setdefault(endpoint, []).append((acc, None))
            for endpoint, found in parts.items():
                point = found[0][1]
                if len(found) > 1 or point is None:  # __other__ (every shard), or pending
                    total = ApiAcc()
                    for acc, _ in found:
                        total.merge(acc)
                    if total.count <= 0:
                        continue
                    point = _point(t, total)
                series.setdefault(endpoint, []).append(point)
            failures = failures_of.get(bucket, 0) + pending_pay.get(bucket, 0)
            if failures:
                payments.append({"t": t, "failures": failures})
        return {
            "step_seconds": BUCKET_S,
            "series": dict(sorted(series.items())),
            "payments": payments,
        }

    @staticmethod
    def _parse(
        key: tuple[int, int], version: str, fields: dict[bytes, bytes]
    ) -> tuple[str, dict[str, Any], int]:
        window = Window()
        window.add_fields(fields)
        t = key[1] * BUCKET_S
        api = {ep: (acc, _point(t, acc)) for ep, acc in window.api.items() if acc.count > 0}
        failures = sum(p.count for p in window.pay.values() if p.count > 0)
        return version, api, failures


def load_alerts(views: Views, now: float) -> dict[str, Any]:
    monitor = views.monitor

    def read(client: Any) -> dict[str, Any]:
        history = throttle.delivery_history(client, monitor.settings)
        return {
            "firing": alerting.firing_alerts(client, monitor.settings),
            "deliveries": history["recent"],
            "delivery_totals": history["totals"],
        }

    return _read(monitor, read)


def load_silences(views: Views, now: float) -> dict[str, Any]:
    monitor = views.monitor
    silences = _read(monitor, lambda c: throttle.list_silences(c, monitor.settings, now))
    return {"silences": silences}


def load_health(views: Views, now: float) -> dict[str, Any]:
    return checks.health(views.monitor, now)


def load_counters(views: Views, now: float) -> dict[str, Any]:
    """The monotonic counters of ``/metrics``."""
    monitor = views.monitor

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


REFRESH_AHEAD = 0.6  # past this share of MONITOR_WEB_CACHE_SECONDS a body is re-rendered


class Views:
    """Cached views of one store and the response bodies rendered from them; thread-safe
    (handlers run in a thread pool).

    A view is read at most once per ``max_age_s`` (``MONITOR_WEB_CACHE_SECONDS``); callers
    arriving while it is being read wait for that read instead of starting their own. A body
    is rendered once per snapshot, and once it is ``REFRESH_AHEAD`` of its age limit a
    background thread reads and renders the next one while viewers still get the current
    one, so under steady traffic no viewer waits for a read (none is ever served data older
    than ``max_age_s``).
    """

    def __init__(self, monitor: MetricsMonitor, max_age_s: float | None = None) -> None:
        self.monitor = monitor
        self.max_age_s = monitor.settings.web_cache_s if max_age_s is None else max_age_s
        self.series = SeriesCache()
        self._locks = {name: threading.Lock() for name in LOADERS}
        self._cache: dict[str, tuple[float, float, dict[str, Any]]] = {}
        # kind -> (views read, generated_at of each, body, monotonic time of the oldest read)
        self._bodies: dict[str, tuple[tuple[str, ...], tuple[float, ...], bytes, float]] = {}
        self._body_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()  # guards _body_locks, _bodies and _refreshing
        self._refreshing: set[str] = set()
        self._generation = 0  # bumped by forget(): a body rendered across it is not kept

    def get(self, name: str) -> tuple[dict[str, Any], float]:
        """The view ``name`` and the unix time it was generated; MonitorError when the store
        is unreachable."""
        _, generated_at, value = self._entry(name, self.max_age_s)
        return value, generated_at

    def _entry(self, name: str, max_age_s: float) -> tuple[float, float, dict[str, Any]]:
        with self._locks[name]:
            cached = self._cache.get(name)
            if cached is not None and time.monotonic() - cached[0] < max_age_s:
                return cached
            started, now = time.monotonic(), time.time()
            entry = (started, now, LOADERS[name](self, now))
            self._cache[name] = entry
            return entry

    def body(self, kind: str, names: tuple[str, ...], render: Callable[[], bytes]) -> bytes:
        """A response body of the views ``names``: every viewer of one snapshot gets the same
        bytes (rendering 1,000 endpoints costs more than reading them)."""
        with self._guard:
            cached = self._bodies.get(kind)
            lock = self._body_locks.setdefault(kind, threading.Lock())
        if cached is not None:
            age_s = time.monotonic() - cached[3]
            if age_s < self.max_age_s:
                if age_s >= REFRESH_AHEAD * self.max_age_s:
                    self._refresh_soon(kind, names, render)
                return cached[2]
        with lock:
            return self._render(kind, names, render, self.max_age_s)

    def _render(
        self, kind: str, names: tuple[str, ...], render: Callable[[], bytes], max_age_s: float
    ) -> bytes:
        generation = self._generation
        entries = [self._entry(name, max_age_s) for name in names]
        stamps = tuple(e[1] for e in entries)
        with self._guard:
            cached = self._bodies.get(kind)
        if cached is not None and cached[1] == stamps:
            return cached[2]
        rendered = render()
        with self._guard:
            if generation == self._generation:  # nothing forgotten meanwhile
                self._bodies[kind] = (names, stamps, rendered, min(e[0] for e in entries))
        return rendered

    def _refresh_soon(self, kind: str, names: tuple[str, ...], render: Callable[[], bytes]) -> None:
        with self._guard:
            if kind in self._refreshing:
                return
            self._refreshing.add(kind)

        def refresh() -> None:
            try:
                with self._body_locks[kind]:
                    # views read less than half the limit ago are fresh enough to render from
                    self._render(kind, names, render, self.max_age_s * (1 - REFRESH_AHEAD))
            except MonitorError as exc:  # the next viewer past the limit gets the 503
                log.warning("refreshing %s: %s", kind, exc)
            finally:
                with self._guard:
                    self._refreshing.discard(kind)

        threading.Thread(target=refresh, name=f"refresh {kind}", daemon=True).start()

    def fresh(self, name: str, now: float) -> dict[str, Any]:
        """The view at ``now``, read now (never cached): ``summary?now=``."""
        return LOADERS[name](self, now)

    def forget(self, name: str) -> None:
        """Drop a cached view and the bodies made from it (after a change made through the
        server, e.g. a new silence)."""
        with self._locks[name]:
            self._cache.pop(name, None)
        with self._guard:
            self._generation += 1
            for kind in [k for k, b in self._bodies.items() if name in b[0]]:
                del self._bodies[kind]
