"""Django database queries: time, errors and count per request, per database alias.

Installed by the ``monitor_worker.integrations.django`` app entry (or ``install()``): every
database connection gets, as it is created (``connection_created``), an execute wrapper that
times each ``execute``/``executemany`` and calls ``track_query(alias, seconds, ok=...)``; the
query also counts in the ``QueryScope`` open in the calling context, so a request middleware
can pass ``queries=scope.queries`` with the request (under ASGI the view's queries run on
another thread than the middleware: the scope travels in a context variable).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from ..tracking import QueryScope
from ._record import fault, monitor_or_default

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

_DISPATCH_UID = "monitor_worker.integrations.django_db"


def install(monitor: MetricsMonitor | None = None) -> None:
    """Hook every database connection created from now on, and those already open."""
    timer_monitor = monitor

    def on_connection_created(connection: BaseDatabaseWrapper, **_: Any) -> None:
        hook(connection, timer_monitor)

    connection_created.connect(on_connection_created, weak=False, dispatch_uid=_DISPATCH_UID)
    QueryScope.hooked = True
    for connection in connections.all(initialized_only=True):
        hook(connection, monitor)


def uninstall() -> None:
    connection_created.disconnect(dispatch_uid=_DISPATCH_UID)


def hook(connection: BaseDatabaseWrapper, monitor: MetricsMonitor | None = None) -> None:
    """Time the queries of ``connection`` (once, however often it reconnects)."""
    wrappers = connection.execute_wrappers
    if not any(isinstance(w, QueryTimer) for w in wrappers):
        wrappers.append(QueryTimer(connection.alias, monitor))


class QueryTimer:
    """An execute wrapper: times the query and records it, whether it succeeds or raises."""

    def __init__(self, alias: str, monitor: MetricsMonitor | None) -> None:
        self.alias = alias
        self._track = monitor_or_default(monitor).track_query

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            result = execute(sql, params, many, context)
            ok = True
            return result
        finally:
            try:
                self._track(self.alias, time.perf_counter() - started, ok=ok)
            except (TypeError, ValueError) as exc:  # an alias over 200 characters
                fault("track_query", exc)
