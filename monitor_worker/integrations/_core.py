"""The rules every integration shares, free of any framework.

A framework module extracts only what its framework knows (the matched route template, the
response status, whether the client went away); the names, statuses, exclusions, timing and
fault handling live here, once:

- the endpoint is the route template (``MONITOR_ENDPOINT_STYLE=method_route`` prefixes the
  method), cut to 200 characters; no route, or a 405, is ``__unmatched__`` (or nothing, with
  ``MONITOR_TRACK_UNMATCHED=0``);
- ``OPTIONS`` and paths matching ``MONITOR_EXCLUDE_PATHS`` are not recorded;
- a raised exception is one 500, a client that went away is 499;
- time runs until the body is handed over in full;
- a fault inside the integration is logged at most once a minute and never reaches the app.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..events import MAX_NAME_LEN, MAX_RESPONSE_TIME_S

if TYPE_CHECKING:
    from ..config import Settings
    from ..monitor import MetricsMonitor

log = logging.getLogger("monitor_worker.integrations")

UNMATCHED = "__unmatched__"
CLIENT_CLOSED = 499  # nginx's "client closed request"
SERVER_ERROR = 500
FAULT_LOG_INTERVAL_S = 60.0
# Results for raw paths are cached (at most this many paths, each at most MAX_NAME_LEN
# characters long, so hostile paths cannot grow the caches beyond a few MB).
_CACHE_MAX = 10_000
_perf = time.perf_counter

# -- the path-templating heuristic (generic WSGI/ASGI middlewares) ------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,}")
_HAS_DIGIT = re.compile(r"[0-9]")
_HAS_LETTER = re.compile(r"[A-Za-z]")


def template_segment(segment: str) -> str:
    """One path segment: digits -> ``{int}``, a UUID -> ``{uuid}``, a long hex string or
    mixed token -> ``{token}``; anything else stays."""
    if segment.isdigit() and segment.isascii():
        return "{int}"
    if len(segment) == 36 and _UUID.fullmatch(segment):
        return "{uuid}"
    if len(segment) >= 16 and (
        _HEX.fullmatch(segment)
        or (
            len(segment) >= 20
            and _TOKEN.fullmatch(segment)
            and _HAS_DIGIT.search(segment)
            and _HAS_LETTER.search(segment)
        )
    ):
        return "{token}"
    return segment


_template_cache: dict[str, str] = {}


def template_path(path: str) -> str:
    """``/users/42/orders/9f1c…e0/`` -> ``/users/{int}/orders/{token}/`` (query dropped)."""
    known = _template_cache.get(path)
    if known is not None:
        return known
    raw = path.partition("?")[0]
    templated = "/".join(template_segment(s) if s else s for s in raw.split("/"))
    if len(_template_cache) < _CACHE_MAX and len(path) <= MAX_NAME_LEN:
        _template_cache[path] = templated
    return templated


# -- names, exclusions, statuses ----------------------------------------------------------------


def cut_name(name: str) -> str:
    """A name the tracker accepts: at most 200 characters of valid text."""
    if len(name) > MAX_NAME_LEN:
        name = name[:MAX_NAME_LEN]
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: show them escaped
            name = name.encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_NAME_LEN]
    return name


def exclusion_matcher(globs: Iterable[str]) -> Callable[[str], object] | None:
    """One compiled pattern for all globs (``*`` also crosses ``/``); None for no globs."""
    patterns = [fnmatch.translate(glob) for glob in globs]
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.DOTALL).match


_DISCONNECT_ERRNOS = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ESHUTDOWN}
)
# Raised by frameworks when the client went away (checked by name: no framework imported).
_DISCONNECT_NAMES = frozenset({"ClientDisconnect", "ClientDisconnected", "RequestAborted"})


def is_disconnect(exc: BaseException) -> bool:
    """True for an exception saying the client went away (a broken pipe, a reset
    connection, Starlette's ClientDisconnect, Django's RequestAborted, a cancelled task)."""
    if isinstance(exc, ConnectionError | asyncio.CancelledError):
        return True
    if isinstance(exc, OSError) and exc.errno in _DISCONNECT_ERRNOS:
        return True
    return any(cls.__name__ in _DISCONNECT_NAMES for cls in type(exc).__mro__)


def status_of_exception(exc: BaseException) -> int:
    return CLIENT_CLOSED if is_disconnect(exc) else SERVER_ERROR


class Rules:
    """The naming and exclusion rules of one ``Settings``."""

    __slots__ = ("_excluded", "_skipped", "method_route", "track_unmatched")

    def __init__(self, settings: Settings) -> None:
        self._excluded = exclusion_matcher(settings.exclude_paths)
        self._skipped: dict[str, bool] = {}
        self.track_unmatched = settings.track_unmatched
        self.method_route = settings.endpoint_style == "method_route"

    def skip(self, method: str, path: str) -> bool:
        """True for requests not recorded: ``OPTIONS`` and excluded paths."""
        if method == "OPTIONS":
            return True
        known = self._skipped.get(path)
        if known is None:
            excluded = self._excluded
            known = excluded is not None and excluded(path) is not None
            if len(self._skipped) < _CACHE_MAX and len(path) <= MAX_NAME_LEN:
                self._skipped[path] = known
        return known

    def endpoint(
        self, method: str, template: str | None, status: int, unmatched: tuple[int, ...] = (405,)
    ) -> str | None:
        """The endpoint name to record, or None for nothing."""
        if template is None or status in unmatched:
            return UNMATCHED if self.track_unmatched else None
        name = f"{method} {template}" if self.method_route else template
        if len(name) > MAX_NAME_LEN or not name.isascii():
            name = cut_name(name)
        return name


def clean_status(status: object) -> int:
    """An HTTP status the tracker accepts; anything else is recorded as a 500."""
    if type(status) is int and 100 <= status <= 599:
        return status
    return SERVER_ERROR


class Recorder:
    """Records requests for one middleware; never raises into the request.

    ``monitor`` defaults to ``monitor_worker.metrics_monitor``; its settings are read on the
    first request, never at import.
    """

    def __init__(self, monitor: MetricsMonitor | None = None) -> None:
        self._monitor = monitor
        self._track: Callable[..., None] | None = None
        self._rules: Rules | None = None
        self._last_fault_log = -FAULT_LOG_INTERVAL_S
        self.faults = 0

    @property
    def monitor(self) -> MetricsMonitor:
        if self._monitor is None:
            from .. import metrics_monitor

            self._monitor = metrics_monitor
        return self._monitor

    @property
    def rules(self) -> Rules:
        rules = self._rules
        if rules is None:
            rules = self._rules = Rules(self.monitor.settings)
        return rules

    def skip(self, method: str, path: str) -> bool:
        """True when the request is not to be recorded (a fault here skips it too)."""
        try:
            rules = self._rules
            if rules is None:
                rules = self.rules
            return rules.skip(method, path)
        except Exception as exc:
            self.fault(exc)
            return True

    def record(
        self,
        method: str,
        template: Callable[[Any], str | None],
        source: Any,
        status: object,
        started: float,
        unmatched: tuple[int, ...] = (405,),
        queries: int | None = None,
    ) -> None:
        """Record one request that began at ``started`` (``time.perf_counter()``) and ends
        now; ``template(source)`` gives the route template, or None when no route matched;
        ``queries``: the database queries it ran, where a database hook counts them."""
        elapsed = _perf() - started
        try:
            rules = self._rules
            if rules is None:
                rules = self.rules
            code = clean_status(status)
            name = rules.endpoint(method, template(source), code, unmatched)
            if name is None:
                return
            track = self._track
            if track is None:
                track = self._track = self.monitor.track_api_request
            elapsed = elapsed if elapsed <= MAX_RESPONSE_TIME_S else MAX_RESPONSE_TIME_S
            if queries is None:
                track(name, elapsed, code)
            else:
                track(name, elapsed, code, queries=queries)
        except Exception as exc:
            self.fault(exc)

    def fault(self, exc: BaseException) -> None:
        """A fault inside the integration: logged at most once a minute, never raised."""
        self.faults += 1
        now = time.monotonic()
        if now - self._last_fault_log >= FAULT_LOG_INTERVAL_S:
            self._last_fault_log = now
            log.warning(
                "request tracking failed (%d times so far; the request went on): %s: %s",
                self.faults,
                type(exc).__name__,
                exc,
            )


# -- response bodies timed to their end ---------------------------------------------------------


class TimedBody:
    """Wraps a sync response body; ``finish(status)`` is called once, when the body is
    exhausted (``None``: the response's own status), raises (500 or 499), or is closed
    before its end (499: the server stopped sending, the client went away)."""

    __slots__ = ("_finish", "_inner", "_open")

    def __init__(
        self, inner: Iterable[Any], finish: Callable[[int | None], None] | None = None
    ) -> None:
        self._inner = inner
        self._finish = finish
        self._open = True

    def finish(self, status: int | None) -> None:
        """Called once at the body's end; subclasses may record here instead."""
        if self._finish is not None:
            self._finish(status)

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._inner
        except GeneratorExit:
            raise  # closed early: close() records it
        except BaseException as exc:
            self._done(status_of_exception(exc))
            raise
        self._done(None)

    def _done(self, status: int | None) -> None:
        if self._open:
            self._open = False
            self.finish(status)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._done(CLIENT_CLOSED)


class AsyncTimedBody:
    """The same for an async response body (Django's async streaming responses)."""

    __slots__ = ("_chunks", "_finish", "_open")

    def __init__(self, inner: AsyncIterator[Any], finish: Callable[[int | None], None]) -> None:
        self._chunks = inner
        self._finish = finish
        self._open = True

    def __aiter__(self) -> AsyncTimedBody:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._done(None)
            raise
        except BaseException as exc:
            self._done(status_of_exception(exc))
            raise

    def _done(self, status: int | None) -> None:
        if self._open:
            self._open = False
            self._finish(status)

    def close(self) -> None:
        self._done(CLIENT_CLOSED)

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._done(CLIENT_CLOSED)
