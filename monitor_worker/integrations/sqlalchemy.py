"""SQLAlchemy: query time, errors and count per request, per engine.

Usage::

    from monitor_worker.integrations.sqlalchemy import instrument_engine
    instrument_engine(engine)                 # alias: the URL's database name
    instrument_engine(reports, name="reports")

Cursor-execute events time each statement (``executemany`` counts once) and call
``track_query(alias, seconds, ok=...)``; ``handle_error`` records a statement that raised. The
query also counts in the ``QueryScope`` open in the calling context. The alias is ``name``,
else the URL's database (for SQLite, the file's name), else the dialect's name.
"""

from __future__ import annotations

import time
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from ..tracking import QueryScope
from ._record import fault, monitor_or_default

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

_ATTR = "_monitor_worker_started"


def engine_alias(engine: Engine) -> str:
    """The alias of ``engine`` when no ``name`` is given."""
    url = engine.url
    database = url.database
    if database and url.get_backend_name() == "sqlite":
        database = PurePath(database).name
    return database or url.get_backend_name()


def instrument_engine(
    engine: Engine, *, name: str | None = None, monitor: MetricsMonitor | None = None
) -> None:
    """Record every statement ``engine`` runs under ``name`` (default: ``engine_alias``)."""
    alias = name or engine_alias(engine)
    track = monitor_or_default(monitor).track_query
    perf = time.perf_counter

    def before(conn: Any, cursor: Any, sql: Any, params: Any, context: Any, many: Any) -> None:
        if context is not None:
            context._monitor_worker_started = perf()

    def after(conn: Any, cursor: Any, sql: Any, params: Any, context: Any, many: Any) -> None:
        _record(context, True)

    def on_error(exception_context: Any) -> None:
        _record(exception_context.execution_context, False)

    def _record(context: Any, ok: bool) -> None:
        started = getattr(context, _ATTR, None)
        if started is not None:
            try:
                track(alias, perf() - started, ok=ok)
            except (TypeError, ValueError) as exc:  # an alias over 200 characters
                fault("track_query", exc)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", on_error)
    QueryScope.hooked = True
