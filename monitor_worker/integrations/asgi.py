"""Request tracking for any ASGI app: a pure ASGI middleware (``send`` is wrapped, the body is
never buffered).

Usage::

    from monitor_worker.integrations.asgi import MetricsMiddleware

    app = MetricsMiddleware(app)                         # raw paths, templated
    app = MetricsMiddleware(app, endpoint=lambda scope: ...)

Without ``endpoint`` the raw path is templated segment by segment (see ``wsgi``); any 404 or
405 response is recorded as ``__unmatched__``. WebSocket and lifespan scopes pass through.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._core import CLIENT_CLOSED, SERVER_ERROR, Recorder, is_disconnect, template_path

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = Callable[[Scope], "str | None"]

_perf = time.perf_counter


class MetricsMiddleware:
    """Wraps an ASGI app; records each HTTP request once, timed until the last body chunk
    (the ``http.response.body`` without ``more_body``) was handed to the server.

    ``endpoint(scope)`` names the endpoint (None: no route matched); it is called once the
    response is complete, so it may read what routing stored in the scope.
    """

    unmatched_statuses: tuple[int, ...] = (404, 405)

    def __init__(
        self,
        app: ASGIApp,
        endpoint: Endpoint | None = None,
        *,
        monitor: MetricsMonitor | None = None,
    ) -> None:
        self.app = app
        self._endpoint = endpoint
        self._recorder = Recorder(monitor)

    def entry(self, scope: Scope) -> Any:
        """What the endpoint needs to remember from the scope as it arrives."""
        return scope.get("path", "")

    def template(self, scope: Scope, entry: Any) -> str | None:
        """The endpoint of a finished request (``entry`` is what ``entry()`` returned)."""
        if self._endpoint is not None:
            return self._endpoint(scope)
        return template_path(entry)

    def _template_of(self, request: tuple[Scope, Any]) -> str | None:
        return self.template(*request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = self._recorder
        method = scope.get("method", "GET")
        if recorder.skip(method, scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        started = _perf()
        entry = self.entry(scope)
        status: Any = None
        done = False
        disconnected = False

        def finish(code: Any) -> None:
            nonlocal done
            done = True
            recorder.record(
                method, self._template_of, (scope, entry), code, started, self.unmatched_statuses
            )

        async def timed_receive() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def timed_send(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message.get("status")
            elif kind == "http.response.body" and not message.get("more_body", False):
                await send(message)
                if not done:
                    finish(status)
                return
            await send(message)

        try:
            await self.app(scope, timed_receive, timed_send)
        except BaseException as exc:
            if not done:
                finish(CLIENT_CLOSED if disconnected or is_disconnect(exc) else SERVER_ERROR)
            raise
        if not done:  # the app returned without completing its response
            finish(CLIENT_CLOSED if disconnected else SERVER_ERROR)
