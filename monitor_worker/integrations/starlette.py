"""Request tracking for Starlette and FastAPI: a pure ASGI middleware.

Usage::

    from monitor_worker.integrations.starlette import MetricsMiddleware

    app.add_middleware(MetricsMiddleware)

The endpoint is the matched route's full path template, ``Mount`` prefixes and FastAPI
``include_router(prefix=...)`` prefixes included (``/v1/items/{item_id}``). A request no
route matches, or whose method the path does not allow, is ``__unmatched__``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Match, Mount

from . import asgi

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

_MOUNT_TAIL = "/{path}"


def _route_path(route: Any, scope: asgi.Scope) -> str | None:
    # FastAPI >= 0.16x keeps the included router's route unprefixed in scope["route"] and the
    # prefixed template in its effective route context.
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        path = getattr(context, "path_format", None)
        if isinstance(path, str) and path:
            return path
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _mount_prefix(routes: Iterable[BaseRoute], view: dict[str, Any]) -> str:
    """The templates of the Mounts a request went through, found by matching again."""
    prefix = ""
    while True:
        for route in routes:
            match, child = route.matches(view)
            if match is Match.FULL:
                break
        else:
            return prefix
        if not isinstance(route, Mount):
            return prefix
        prefix += route.path_format.removesuffix(_MOUNT_TAIL)
        view = {**view, **child}
        routes = route.routes


class MetricsMiddleware(asgi.MetricsMiddleware):
    """``app.add_middleware(MetricsMiddleware)``; ``monitor=`` picks another monitor."""

    unmatched_statuses = (405,)

    def __init__(self, app: asgi.ASGIApp, *, monitor: MetricsMonitor | None = None) -> None:
        super().__init__(app, monitor=monitor)

    def entry(self, scope: asgi.Scope) -> Any:
        return scope.get("app"), scope.get("root_path", ""), scope.get("path", "")

    def template(self, scope: asgi.Scope, entry: Any) -> str | None:
        route = scope.get("route")
        if route is None:
            return None
        app, root_path, path = entry
        is_mount = isinstance(route, Mount)
        if is_mount and route.routes:
            return None  # the mounted router matched nothing (a 404 inside the mount)
        tail = _MOUNT_TAIL if is_mount else _route_path(route, scope)
        if tail is None:
            return None
        if not is_mount and scope.get("root_path", "") == root_path:
            return tail
        view = {"type": "http", "method": scope["method"], "path": path, "root_path": root_path}
        return _mount_prefix(getattr(app, "routes", ()), view) + tail
