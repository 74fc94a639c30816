"""History beyond the window: minute, hour and day roll-ups in Redis (default) or PostgreSQL.

Usage::

    store = open_store(settings, client)          # Redis, or PostgreSQL with MONITOR_HISTORY_URL
    Archiver(client, settings, store).run()       # the monitor_worker.archive task
    query(store, since=time.time() - 86400, step="1h")   # get_history's document

The modules: ``rollup`` (pure: rows, kinds, encoding, merging, query shapes), ``archive``
(buckets -> store, exactly once), ``redis_store`` and ``postgres`` (the two stores).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..config import Settings
from .archive import Archiver, ArchiveResult
from .codec import Row, Snapshot
from .rollup import DAY_S, KINDS, LEVEL_OF_STEP, MINUTE_S, Series, check_range, check_step

__all__ = ["ArchiveResult", "Archiver", "HistoryStore", "open_store", "query"]


class HistoryStore(Protocol):
    """What the archive and queries need of a store (RedisHistory, PostgresHistory)."""

    name: str
    minutes_retention_s: float
    hours_retention_s: float

    def write(self, src: int, snapshots: Sequence[Snapshot], now: float) -> int:
        """Merge minute snapshots of source shard ``src`` atomically; returns rows written."""

    def add_gaps(self, minutes: Iterable[int], now: float) -> None:
        """Record minutes (start t) lost before they were archived."""

    def expire(self, now: float) -> dict[str, int]:
        """Drop what is older than the retention (what was dropped, by table)."""

    def read(
        self, level: str, since: float, until: float, only: Mapping[str, str]
    ) -> list[tuple[str, str, int, Row]]:
        """Rows ``(kind, name, t, row)`` of ``level`` overlapping ``[since, until]``."""

    def gaps(self, since: float, until: float) -> list[list[int]]:
        """Recorded gaps overlapping ``[since, until]``, joined."""

    def close(self) -> None:
        """Release connections this store opened."""


def open_store(settings: Settings, client: Any) -> HistoryStore:
    """PostgreSQL when ``MONITOR_HISTORY_URL`` is set, else the metrics store ``client``."""
    if settings.history_url:
        from .postgres import PostgresHistory

        return PostgresHistory(settings)
    from .redis_store import RedisHistory

    return RedisHistory(client, settings)


def query(
    store: HistoryStore,
    since: float,
    until: float | None = None,
    *,
    step: str = "1h",
    endpoint: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The ``get_history`` document (its shape is in README.md)."""
    at = time.time() if now is None else float(now)
    since, until = check_range(since, at if until is None else until)
    if endpoint is not None and (not isinstance(endpoint, str) or not endpoint):
        raise ValueError(f"endpoint must be a non-empty str or None (got {endpoint!r})")
    step_s = check_step(step, since, at, store.minutes_retention_s)
    series = Series(step_s)
    # Nothing is kept from before the retention or after now: the range read is bounded
    # whatever the caller asks (a day of slack covers the alignment of day rows).
    oldest = at - store.hours_retention_s - DAY_S
    start = max(since, oldest)
    start -= start % step_s
    end = min(until, at + MINUTE_S)
    if end < start:
        return series.document([])
    only = {k.code: endpoint for k in KINDS.values() if k.by_endpoint and endpoint is not None}
    for code, name, t, row in store.read(LEVEL_OF_STEP[step], start, end, only):
        if t >= start:
            series.add(code, name, t, row)
    return series.document(store.gaps(start, end))
