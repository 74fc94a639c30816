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
from ._record import record

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

    def before(conn: Any, cursor: Any, sql: Any, params: Any, context: Any, many: Any) -> None:
        if context is not None:
            setattr(context, _ATTR, time.perf_counter())

    def after(conn: Any, cursor: Any, sql: Any, params: Any, context: Any, many: Any) -> None:
        started = getattr(context, _ATTR, None)
        if started is not None:
            record(monitor, "track_query", alias, time.perf_counter() - started, ok=True)

    def on_error(exception_context: Any) -> None:
        started = getattr(exception_context.execution_context, _ATTR, None)
        if started is not None:
            record(monitor, "track_query", alias, time.perf_counter() - started, ok=False)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", on_error)
    QueryScope.hooked = True
