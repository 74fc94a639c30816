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
        method = environ.get("REQUEST_METHOD", "GET")
        recorder = self._recorder
        if recorder.skip(method, environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        started = _perf()
        status: list[Any] = [None]

        def start(status_line: str, headers: list[Any], exc_info: Any = None) -> Any:
            try:
                status[0] = int(status_line[:3])
            except (TypeError, ValueError):
                status[0] = None
            if exc_info is None:
                return start_response(status_line, headers)
            return start_response(status_line, headers, exc_info)

        def finish(override: int | None) -> None:
            recorder.record(
                method,
                lambda: self._endpoint(environ),
                status[0] if override is None else override,
                started,
                self._unmatched,
            )

        try:
            body = self.app(environ, start)
        except BaseException as exc:
            finish(status_of_exception(exc))
            raise
        if type(body) is list or type(body) is tuple:
            finish(None)  # the whole body is handed over now
            return body
        return TimedBody(body, finish)
