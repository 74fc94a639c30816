"""Django: request tracking (``MetricsMiddleware``) and the app entry that hooks every
database connection and every configured cache.

Requests, under WSGI and ASGI (one sync-and-async middleware: no thread hop per request under
ASGI). Usage, first in the list::

    MIDDLEWARE = [
        "monitor_worker.integrations.django.MetricsMiddleware",
        ...
    ]

The endpoint is ``/`` + the matched route (``path("v1/", include(...))`` and
``path("api/users/<int:pk>/", ...)`` give ``/v1/api/users/<int:pk>/``; a ``re_path`` loses
one leading ``^`` and one trailing ``$``). A request no URL pattern matches, or a 405, is
``__unmatched__``. A subclass may set ``monitor`` to record into another ``MetricsMonitor``.

Database query time and cache hit rate, with no database ``ENGINE`` and no cache ``BACKEND``
change::

    INSTALLED_APPS = [..., "monitor_worker.integrations.django"]

Its ``AppConfig`` (``apps.py``: Django finds an app's config there, which is why this is a
package) installs ``django_db`` (query time per database alias, and the query count of the
request in the open ``QueryScope``: the middleware opens one per request and records
``queries`` with it) and ``django_cache`` (lookups and hits per cache alias) as Django starts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase, StreamingHttpResponse

from ...tracking import QueryScope
from .._core import AsyncTimedBody, Recorder, TimedBody, status_of_exception

if TYPE_CHECKING:
    from ...monitor import MetricsMonitor

_perf = time.perf_counter
_STATUS_ATTR = "_monitor_worker_status"


def route_template(request: HttpRequest) -> str | None:
    """``/`` + the matched route, or None when no URL pattern matched."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    route = match.route
    if not isinstance(route, str):
        return None
    # Django joins the parts of a nested route, dropping each inner part's leading "^"; the
    # outer "^" and the last part's "$" are all that remain of the regex anchors.
    route = route.removeprefix("^").removesuffix("$")
    return "/" + route


class MetricsMiddleware:
    """Records each request once: its route, status and time until the body's end."""

    sync_capable = True
    async_capable = True
    monitor: MetricsMonitor | None = None

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self.recorder = Recorder(self.monitor)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        if self.recorder.skip(request.method or "GET", request.path_info):
            return self.get_response(request)
        started = _perf()
        scope = QueryScope()
        try:
            with scope:
                response = self.get_response(request)
        except BaseException as exc:
            self._record(request, status_of_exception(exc), started, scope)
            raise
        return self._timed(request, response, started, scope)

    async def _acall(self, request: HttpRequest) -> Any:
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        if self.recorder.skip(request.method or "GET", request.path_info):
            return await get_response(request)
        started = _perf()
        scope = QueryScope()  # the view's queries, on whatever thread it runs
        try:
            with scope:
                response = await get_response(request)
        except BaseException as exc:
            self._record(request, status_of_exception(exc), started, scope)
            raise
        return self._timed(request, response, started, scope)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """A view raised: Django turns it into a response; remember a client disconnect so
        it is recorded as 499, not as the 500 response Django makes of it."""
        setattr(request, _STATUS_ATTR, status_of_exception(exception))

    def _timed(self, request: HttpRequest, response: Any, started: float, scope: QueryScope) -> Any:
        if isinstance(response, StreamingHttpResponse) and (
            getattr(response, "file_to_stream", None) is None
        ):

            def finish(status: int | None) -> None:
                code = response.status_code if status is None else status
                self._record(request, code, started, scope)

            try:
                content = response.streaming_content
                if response.is_async:
                    response.streaming_content = AsyncTimedBody(content, finish)
                else:
                    response.streaming_content = TimedBody(content, finish)
            except Exception as exc:  # never break the response
                self.recorder.fault(exc)
            return response
        status = getattr(response, "status_code", None)
        if isinstance(response, HttpResponseBase) and status is not None and status >= 500:
            status = getattr(request, _STATUS_ATTR, status)
        self._record(request, status, started, scope)
        return response

    def _record(self, request: HttpRequest, status: Any, started: float, scope: QueryScope) -> None:
        # queries only where a database hook counts them (absent, not 0, elsewhere)
        queries = scope.queries if QueryScope.hooked else None
        self.recorder.record(
            request.method or "GET", route_template, request, status, started, queries=queries
        )
