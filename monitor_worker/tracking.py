"""The in-process buffer and its flusher: the hot path of the host app.

A track call validates, appends a tuple to a bounded ``deque`` and returns. A background
thread (or, where threads never run, the calling thread with a 50 ms socket timeout and a
circuit breaker) encodes batches and pushes them with one pipelined script call per flush.
Redis faults never raise into the caller: events stay buffered up to ``MONITOR_BUFFER_MAX``,
the oldest beyond that are dropped and counted, and the count reaches Redis once it is back.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from .config import Settings
from .events import (
    MAX_COUNT,
    MAX_METRIC_VALUE,
    MAX_RESPONSE_TIME_S,
    TASK_OUTCOMES,
    check_api,
    check_count,
    check_flag,
    check_metric,
    check_payment,
    check_query,
    check_task,
    check_timestamp,
    encode_chunk,
    encode_overflow_block,
    encode_runs,
    task_name,
)
from .keys import shard_of
from .store import REDIS_ERRORS, Client, Scripts, connect, describe_error, push_batches

log = logging.getLogger("monitor_worker.tracking")

_INF = math.inf
_time = time.time
FAULT_LOG_INTERVAL_S = 60.0
INLINE_SOCKET_TIMEOUT_S = 0.05
# After a failed push no new attempt is made for a while: 0.5 s in the flusher thread (it
# costs the app nothing and notices Redis is back at once); inline, on the caller's thread,
# 0.5 s doubling to 5 s (the circuit breaker).
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0

Item = tuple[Any, ...]


def _threads_work() -> bool:
    """False under uWSGI without --enable-threads, where a started thread never runs."""
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return True
    opt = getattr(uwsgi, "opt", {})
    return bool(opt.get("enable-threads") or opt.get(b"enable-threads"))


class Tracker:
    """Buffers events and delivers them to Redis; never raises on a Redis fault.

    Usage::

        tracker = Tracker(lambda: settings)
        tracker.track_api_request("/api/x/", 0.12, 200)
        tracker.flush(timeout=5)
    """

    def __init__(
        self,
        settings: Callable[[], Settings],
        client: Client | None = None,
    ) -> None:
        self._settings_source = settings
        self._injected_client = client
        self._reset()
        _FORK_SAFE.add(self)

    def _reset(self) -> None:
        self._buffer: deque[Item] = deque()
        self._limit = sys.maxsize
        self._flush_at = sys.maxsize
        self._deadline = _INF
        self._started = False
        self._kicked = False
        self._stopping = False
        self._overflowed = 0
        self._settings: Settings | None = None
        self._client: Client | None = None
        self._scripts: Scripts | None = None
        self._shard_cache: dict[str, int] = {}
        self._unsent: list[tuple[int, str, int, bytes]] | None = None
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._inline = False
        self._retry_at = 0.0
        self._retry_s = RETRY_FIRST_S
        self._last_fault_log = -_INF
        self.faults = 0

    # -- hot path ---------------------------------------------------------------------------

    def track_api_request(
        self,
        endpoint: str,
        response_time: float,
        status_code: int,
        *,
        timestamp: float | None = None,
        queries: int | None = None,
    ) -> None:
        """Record one API request (seconds, HTTP status). Raises only on bad arguments.

        ``queries``: the database queries the request ran (``QueryScope.queries``), where a
        database hook is installed."""
        if not (
            type(endpoint) is str
            and 0 < len(endpoint) <= 200
            and endpoint.isascii()
            and (type(response_time) is float or type(response_time) is int)
            and 0 <= response_time <= MAX_RESPONSE_TIME_S
            and type(status_code) is int
            and 100 <= status_code <= 599
        ):
            endpoint, response_time, status_code = check_api(endpoint, response_time, status_code)
        ts = _time() if timestamp is None else check_timestamp(timestamp)
        self._append(("a", ts, endpoint, response_time, status_code))
        if queries is not None:
            self._append(("n", ts, endpoint, check_count(queries, "queries")))

    def track_payment_failure(
        self, reason: str, amount: Any, *, timestamp: float | None = None
    ) -> None:
        """Record one failed payment (reason text, amount as int, float or Decimal)."""
        reason, amount_f = check_payment(reason, amount)
        ts = _time() if timestamp is None else check_timestamp(timestamp)
        self._append(("p", ts, reason, amount_f))

    def track_task(
        self,
        task: str,
        outcome: str,
        *,
        runtime: float | None = None,
        queue_wait: float | None = None,
        queue: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Record one attempt of a Celery task: ``outcome`` ``"s"`` (success), ``"f"``
        (failure) or ``"r"`` (retry); runtime and queue wait in seconds, None where unknown.
        The Celery integration calls this; ``queue`` is the routing key it came from."""
        name, outcome, rt, wait, q = check_task(task, outcome, runtime, queue_wait, queue)
        ts = _time() if timestamp is None else check_timestamp(timestamp)
        self._append(
            ("t", ts, task_name(name, q), TASK_OUTCOMES[outcome], _nan_for(rt), _nan_for(wait))
        )

    def track_query(
        self, alias: str, duration: float, *, ok: bool = True, timestamp: float | None = None
    ) -> None:
        """Record one database query of ``alias`` (seconds; ``ok=False``: it raised) and count
        it in the open ``QueryScope``. The database integrations call this."""
        if not (
            type(alias) is str
            and 0 < len(alias) <= 200
            and alias.isascii()
            and type(duration) is float
            and 0 <= duration <= MAX_RESPONSE_TIME_S
            and type(ok) is bool
        ):
            alias, duration, ok = check_query(alias, duration, ok)
        ts = _time() if timestamp is None else check_timestamp(timestamp)
        self._append(("d", ts, alias, duration, 1 if ok else 0))
        scope = _SCOPE.get()
        if scope is not None:
            scope.queries += 1

    def track_cache(self, name: str, hit: bool, *, timestamp: float | None = None) -> None:
        """Record one cache lookup of cache ``name``: ``hit`` is True when the key was there
        (whatever its value)."""
        self.track_cache_lookups(name, 1, 1 if check_flag(hit, "hit") else 0, timestamp=timestamp)

    def track_cache_lookups(
        self, name: str, lookups: int, hits: int, *, timestamp: float | None = None
    ) -> None:
        """Record one call that looked up ``lookups`` keys of cache ``name``, ``hits`` found."""
        if not (
            type(name) is str
            and 0 < len(name) <= 200
            and name.isascii()
            and type(lookups) is int
            and type(hits) is int
            and 0 <= hits <= lookups <= MAX_COUNT
        ):
            lookups = check_count(lookups, "lookups")
            if check_count(hits, "hits") > lookups:
                raise ValueError(f"hits must be at most lookups ({lookups}) (got {hits})")
            name, _ = check_metric(name, 0)
        ts = _time() if timestamp is None else check_timestamp(timestamp)
        self._append(("k", ts, name, lookups, hits))

    def track_metric(self, name: str, value: float, *, timestamp: float | None = None) -> None:
        """Record one value of the custom metric ``name`` (finite, >= 0): its window shows
        count, average, P95 and maximum.

        Usage: ``metrics_monitor.track_metric("checkout.basket_size", 3)``"""
        if not (
            type(name) is str
            and 0 < len(name) <= 200
            and name.isascii()
            and (type(value) is float or type(value) is int)
            and 0 <= value <= MAX_METRIC_VALUE
        ):
            name, value = check_metric(name, value)
        ts = _time() if timestamp is None else check_timestamp(timestamp)
        self._append(("v", ts, name, float(value)))

    def track_event(self, name: str, ok: bool, *, timestamp: float | None = None) -> None:
        """Record one success (``ok=True``) or failure of the custom event ``name``: its window
        shows count, successes and success rate.

        Usage: ``metrics_monitor.track_event("email.sent", ok=False)``"""
        name, _ = check_metric(name, 0)
        ok = check_flag(ok, "ok")
        ts = _time() if timestamp is None else check_timestamp(timestamp)
        self._append(("r", ts, name, 1 if ok else 0))

    def _append(self, item: Item) -> None:
        """Buffer one event (the oldest goes, counted, when the buffer is full)."""
        if not self._started:
            self._start()
        buf = self._buffer
        if len(buf) >= self._limit:
            self._overflowed += 1
        buf.append(item)
        if len(buf) >= self._flush_at or item[1] >= self._deadline:
            self._kick()

    # -- machinery ---------------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            settings = self._settings_source()
            self._settings = settings
            self._buffer = deque(self._buffer, maxlen=settings.buffer_max)
            self._limit = settings.buffer_max
            self._flush_at = settings.flush_batch
            mode = settings.flush_mode
            self._inline = mode == "inline" or (mode == "auto" and not _threads_work())
            if self._inline:
                self._deadline = _time() + settings.flush_interval_s
            else:
                self._thread = threading.Thread(
                    target=self._run, name="monitor-worker-flusher", daemon=True
                )
                self._thread.start()
            atexit.register(_flush_at_exit, weakref.ref(self))
            self._started = True

    def _kick(self) -> None:
        if self._inline:
            settings = self._settings
            assert settings is not None
            self._deadline = _time() + settings.flush_interval_s
            if time.monotonic() >= self._retry_at and self._flush_lock.acquire(blocking=False):
                try:
                    self._flush_pending()
                finally:
                    self._flush_lock.release()
        elif not self._kicked:
            self._kicked = True
            self._wake.set()

    def _run(self) -> None:
        settings = self._settings
        assert settings is not None
        while not self._stopping:
            self._wake.wait(settings.flush_interval_s)
            self._wake.clear()
            if time.monotonic() < self._retry_at:
                continue  # _kicked stays set: track calls do not wake us before the retry
            self._kicked = False
            with self._flush_lock:
                # What is buffered now, in whole batches; what arrives meanwhile waits for the
                # next wake-up, so steady traffic is pushed in full batches rather than chased
                # event by event (a push per few events costs the app several µs each).
                self._flush_pending(events=len(self._buffer))

    def _connection(self) -> tuple[Client, Scripts]:
        if self._client is None or self._scripts is None:
            settings = self._settings
            assert settings is not None
            if self._injected_client is not None:
                self._client = self._injected_client
            else:
                timeout = INLINE_SOCKET_TIMEOUT_S if self._inline else 2.0
                self._client = connect(
                    settings, socket_timeout_s=timeout, connect_timeout_s=timeout, retries=False
                )
            self._scripts = Scripts.of(self._client)
        return self._client, self._scripts

    def _flush_pending(self, deadline: float = _INF, events: int | None = None) -> bool:
        """Push everything buffered, or about ``events`` of it (whole chunks) when given;
        caller holds the flush lock. False on a Redis fault."""
        settings = self._settings
        assert settings is not None
        while True:
            if self._unsent is None:
                self._unsent = self._take(settings)
                if self._unsent is None:
                    return True
            try:
                client, scr = self._connection()
                push_batches(client, scr, settings, self._unsent)
            except REDIS_ERRORS as exc:
                self._fault(settings, exc)
                return False
            pushed = sum(count for _, _, count, _ in self._unsent)
            self._unsent = None
            self._retry_at = 0.0
            self._retry_s = RETRY_FIRST_S
            if events is not None:
                events -= pushed
                if events <= 0:
                    return True
            if time.monotonic() >= deadline:
                return not self._buffer

    def _take(self, settings: Settings) -> list[tuple[int, str, int, bytes]] | None:
        """Up to a flush batch of buffered events as (shard, push id, events, chunk): items
        are grouped by kind and name here, the one loop over events; the encoding works on
        whole runs."""
        popleft = self._buffer.popleft
        by_kind: dict[str, dict[str, list[Item]]] = {}
        try:
            for _ in range(settings.flush_batch):
                item = popleft()
                runs = by_kind.get(item[0])
                if runs is None:
                    runs = by_kind[item[0]] = {}
                run = runs.get(item[2])
                if run is None:
                    run = runs[item[2]] = []
                run.append(item)
        except IndexError:
            pass
        cache = self._shard_cache
        shards: dict[int, dict[str, list[tuple[str, list[Item]]]]] = {}
        for kind, runs in by_kind.items():
            for name, run in runs.items():
                shard = cache.get(name)
                if shard is None:
                    shard = shard_of(name, settings.shards)
                    if len(cache) < 10_000:
                        cache[name] = shard
                shards.setdefault(shard, {}).setdefault(kind, []).append((name, run))
        overflowed = self._overflowed
        if overflowed:
            self._overflowed -= overflowed
            shards.setdefault(0, {})
        batches = []
        for shard, kinds in shards.items():
            blocks = [encode_runs(kind, runs) for kind, runs in kinds.items()]
            events = sum(len(run) for runs in kinds.values() for _, run in runs)
            if shard == 0 and overflowed:
                blocks.append(encode_overflow_block(overflowed))
                events += 1
            batches.append((shard, uuid.uuid4().hex, events, encode_chunk(blocks, events)))
        return batches or None

    def _fault(self, settings: Settings, exc: BaseException) -> None:
        self.faults += 1
        self._retry_at = time.monotonic() + self._retry_s
        if self._inline:
            self._retry_s = min(RETRY_MAX_S, 2 * self._retry_s)
        self._client = None
        self._scripts = None
        now = time.monotonic()
        if now - self._last_fault_log >= FAULT_LOG_INTERVAL_S:
            self._last_fault_log = now
            log.warning(
                "could not deliver tracked events (%d buffered, kept): %s",
                len(self._buffer),
                describe_error(settings, exc),
            )

    # -- public control ------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Push everything buffered in this process; True when all of it reached Redis."""
        if not self._started:
            return True
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if not self._flush_lock.acquire(timeout=max(0.0, remaining)):
                return False
            try:
                self._retry_at = 0.0
                done = self._flush_pending(deadline)
            finally:
                self._flush_lock.release()
            if done and not self._buffer and self._unsent is None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def buffered(self) -> int:
        unsent = sum(count for _, _, count, _ in self._unsent) if self._unsent else 0
        return len(self._buffer) + unsent

    def close(self, timeout: float = 2.0) -> bool:
        """Flush and stop the flusher thread."""
        delivered = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._reset()
        return delivered

    def _after_fork_in_child(self) -> None:
        self._reset()


class QueryScope:
    """Counts the database queries tracked while it is open, in this context and every thread
    or task that inherits it (a Django view run by ``sync_to_async`` under ASGI).

    Usage (what a request middleware does)::

        with QueryScope() as scope:
            response = handle(request)
        metrics_monitor.track_api_request(endpoint, elapsed, status, queries=scope.queries)
    """

    __slots__ = ("_token", "queries")
    hooked = False  # True once a database hook (Django's app entry, SQLAlchemy) is installed

    def __init__(self) -> None:
        self.queries = 0
        self._token: Token[QueryScope | None] | None = None

    def __enter__(self) -> QueryScope:
        self._token = _SCOPE.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _SCOPE.reset(self._token)
            self._token = None


_SCOPE: ContextVar[QueryScope | None] = ContextVar("monitor_worker_query_scope", default=None)


def _nan_for(value: float | None) -> float:
    """A value column's entry: NaN where the value is unknown."""
    return math.nan if value is None else value


def _flush_at_exit(ref: weakref.ReferenceType[Tracker]) -> None:
    tracker = ref()
    if tracker is not None and tracker._started:
        tracker.flush(timeout=2.0)


_FORK_SAFE: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for tracker in list(_FORK_SAFE):
        tracker._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_all_after_fork)
