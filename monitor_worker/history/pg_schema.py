"""The PostgreSQL history schema: its versioned migrations, connecting, and error messages.

Tables (in the first schema of the connection's ``search_path``)::

    monitor_history_version  migrations applied (``monitor-worker history migrate``)
    monitor_minutes          minute rows, one partition per UTC day
    monitor_minute_bins      a minute's sketch bins while its bucket may change, per day
    monitor_hours            hour rows with their bins, one partition per UTC month
    monitor_days             day rows with their bins, one partition per UTC month
    monitor_gaps             minutes lost before they were archived
"""

from __future__ import annotations

from typing import Any

try:
    import psycopg
except ImportError:  # the postgresql extra is not installed: connect() says so
    psycopg = None  # type: ignore[assignment]

from ..config import Settings, redact_url
from ..errors import HistoryStoreError

LOCK_CLASS = 0x6D77  # advisory lock class of history writes ("mw"); the object is the shard
DDL_LOCK = (LOCK_CLASS, -1)  # partition DDL and migrations
CONNECT_TIMEOUT_S = 5

_TABLES = """
CREATE TABLE monitor_minutes (
    kind text NOT NULL, src smallint NOT NULL, name bytea NOT NULL, t bigint NOT NULL,
    n bigint NOT NULL, e bigint NOT NULL, s double precision NOT NULL, v double precision,
    PRIMARY KEY (kind, name, t, src)
) PARTITION BY RANGE (t);
CREATE TABLE monitor_minute_bins (
    kind text NOT NULL, src smallint NOT NULL, name bytea NOT NULL, t bigint NOT NULL,
    bins bytea NOT NULL,
    PRIMARY KEY (kind, name, t, src)
) PARTITION BY RANGE (t);
CREATE TABLE monitor_hours (
    kind text NOT NULL, src smallint NOT NULL, name bytea NOT NULL, t bigint NOT NULL,
    n bigint NOT NULL, e bigint NOT NULL, s double precision NOT NULL, bins bytea,
    PRIMARY KEY (kind, name, t, src)
) PARTITION BY RANGE (t);
CREATE TABLE monitor_days (LIKE monitor_hours INCLUDING ALL) PARTITION BY RANGE (t);
CREATE TABLE monitor_gaps (t0 bigint NOT NULL, t1 bigint NOT NULL, PRIMARY KEY (t0, t1));
CREATE INDEX monitor_hours_t ON monitor_hours (t);
CREATE INDEX monitor_days_t ON monitor_days (t);
CREATE INDEX monitor_minutes_t ON monitor_minutes (t);
"""

# version -> statements; append new versions, never edit an applied one
MIGRATIONS: dict[int, str] = {
    1: _TABLES,
    # a second count for the kinds that need one (a task's runs beside its attempts)
    2: """
ALTER TABLE monitor_minutes ADD COLUMN r bigint NOT NULL DEFAULT 0;
ALTER TABLE monitor_hours ADD COLUMN r bigint NOT NULL DEFAULT 0;
ALTER TABLE monitor_days ADD COLUMN r bigint NOT NULL DEFAULT 0;
""",
}


def connect(settings: Settings) -> psycopg.Connection[Any]:
    if psycopg is None:
        raise HistoryStoreError(
            "MONITOR_HISTORY_URL names PostgreSQL, which needs psycopg: "
            "pip install 'monitor-worker[postgresql]'"
        )
    try:
        return psycopg.connect(settings.history_url, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise failure(settings, exc) from None


def failure(settings: Settings, exc: BaseException) -> HistoryStoreError:
    url = settings.history_url
    text = str(exc).strip().replace(url, redact_url(url)).splitlines()
    return HistoryStoreError(
        f"history store {redact_url(url)} failed: {text[0] if text else type(exc).__name__}"
    )


def migrate(settings: Settings) -> list[int]:
    """Create or upgrade the schema; returns the versions applied (none when up to date).

    Safe to run twice and from two hosts at once (one advisory lock, one transaction)."""
    with connect(settings) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", DDL_LOCK)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS monitor_history_version ("
                    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {r[0] for r in conn.execute("SELECT version FROM monitor_history_version")}
                applied = []
                for version in sorted(MIGRATIONS):
                    if version in done:
                        continue
                    conn.execute(MIGRATIONS[version])
                    conn.execute(
                        "INSERT INTO monitor_history_version (version) VALUES (%s)", (version,)
                    )
                    applied.append(version)
        except psycopg.Error as exc:
            raise failure(settings, exc) from None
    return applied
