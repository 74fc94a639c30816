"""Request tracking for any WSGI app.

Usage::

    from monitor_worker.integrations.wsgi import MetricsMiddleware

    application = MetricsMiddleware(application)            # raw paths, templated
    application = MetricsMiddleware(application, endpoint=lambda environ: ...)

Without ``endpoint`` the raw path (query dropped) is templated segment by segment (digits ->
``{int}``, UUIDs -> ``{uuid}``, long hex or mixed tokens -> ``{token}``). Having no router to
ask, any 404 or 405 response is recorded as ``__unmatched__``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._core import Recorder, TimedBody, status_of_exception, template_path

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
Endpoint = Callable[[Environ], "str | None"]

_perf = time.perf_counter


def raw_path(environ: Environ) -> str:
    """The request path as text (WSGI carries the raw bytes as latin-1)."""
    path: str = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if path.isascii():
        return path
    try:
        return path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return path


def templated_path(environ: Environ) -> str:
    return template_path(raw_path(environ))


class MetricsMiddleware:
    """Wraps a WSGI app; records one request per response, timed until the body's end.

    ``endpoint(environ)`` names the endpoint (None: no route matched); it is called once the
    response is complete, so it may read what the app stored in the environ.
    """

    def __init__(
        self,
        app: WSGIApp,
        endpoint: Endpoint | None = None,
        *,
        monitor: MetricsMonitor | None = None,
        unmatched_statuses: tuple[int, ...] = (404, 405),
    ) -> None:
        self.app = app
        self._endpoint = endpoint or templated_path
        self._recorder = Recorder(monitor)
        self._unmatched = unmatched_statuses

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD") or "GET"
        if self._recorder.skip(method, environ.get("PATH_INFO") or ""):
            return self.app(environ, start_response)
        exchange = _Exchange(self, environ, start_response, method)
        try:
            body = self.app(environ, exchange.start)
        except BaseException as exc:
            exchange.finish(status_of_exception(exc))
            raise
        if type(body) is list or type(body) is tuple:
            exchange.finish(None)  # the whole body is handed over now
            return body
        exchange._inner = body
        return exchange


class _Exchange(TimedBody):
    """One request: its ``start_response``, and its body timed to the end."""

    __slots__ = ("_environ", "_method", "_middleware", "_start_response", "_started", "_status")

    def __init__(
        self,
        middleware: MetricsMiddleware,
        environ: Environ,
        start_response: StartResponse,
        method: str,
    ) -> None:
        self._inner: Iterable[Any] = ()
        self._finish = None
        self._open = True
        self._middleware = middleware
        self._environ = environ
        self._start_response = start_response
        self._method = method
        self._status: str | None = None
        self._started = _perf()

    def start(self, status: str, headers: list[Any], exc_info: Any = None) -> Any:
        self._status = status
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    def finish(self, status: int | None) -> None:
        if status is None:
            try:
                status = int(self._status[:3])  # type: ignore[index]
            except (TypeError, ValueError):
                status = None
        middleware = self._middleware
        middleware._recorder.record(
            self._method,
            middleware._endpoint,
            self._environ,
            status,
            self._started,
            middleware._unmatched,
        )
