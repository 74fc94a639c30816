"""History in PostgreSQL (``MONITOR_HISTORY_URL=postgresql://...``, psycopg 3).

The tables and their migrations are in pg_schema.py.

Rows are ``(kind, src, name, t, n, e, s, r[, v][, bins])`` as in history/rollup.py: ``name`` is
``bytea`` (the name's UTF-8), so any name the core accepts, NUL included, round-trips, and
names only ever travel as bound parameters. Only partition DDL is built, from fixed templates,
identifiers and integer bounds. Writes of one source shard hold a transaction-level advisory
lock, read the stored rows, merge, and upsert them in one multi-row statement per table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

try:
    import psycopg
    from psycopg import sql
except ImportError:  # the postgresql extra is not installed: PostgresHistory says so
    psycopg = None  # type: ignore[assignment]
    sql = None  # type: ignore[assignment]

from ..config import Settings
from ..errors import HistoryStoreError
from .codec import Row, RowKey, Snapshot, decode_bins, encode_bins
from .pg_schema import DDL_LOCK, LOCK_CLASS, MIGRATIONS, connect, failure
from .rollup import DAY_S, expired, keys_of, merge, merge_ranges, union

log = logging.getLogger("monitor_worker.history")

# table -> (partition period, partition name suffix format)
_DAILY, _MONTHLY = "day", "month"
_PARTITIONED = {
    "monitor_minutes": _DAILY,
    "monitor_minute_bins": _DAILY,
    "monitor_hours": _MONTHLY,
    "monitor_days": _MONTHLY,
}
_TABLE_OF_LEVEL = {"m": "monitor_minutes", "h": "monitor_hours", "d": "monitor_days"}


def _period(kind: str, t: int) -> tuple[int, int, str]:
    """The partition holding ``t``: (start, end, name suffix)."""
    day = datetime.fromtimestamp(t - t % DAY_S, UTC)
    if kind == _DAILY:
        start = int(day.timestamp())
        return start, start + DAY_S, day.strftime("%Y%m%d")
    first = day.replace(day=1)
    following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return int(first.timestamp()), int(following.timestamp()), first.strftime("%Y%m")


class PostgresHistory:
    """History rows in PostgreSQL; one connection per store, opened on first use."""

    name = "postgresql"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.minutes_retention_s, self.hours_retention_s = settings.history_retention
        self.bins_life_s = settings.history_bins_life_s  # a minute keeps its bins this long
        self._conn: psycopg.Connection[Any] | None = None
        self._partitions: set[str] = set()

    # -- connection ---------------------------------------------------------------------------

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = connect(self.settings)
            try:
                with conn.transaction():
                    row = conn.execute(
                        "SELECT max(version) FROM monitor_history_version"
                    ).fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
            except psycopg.Error as exc:
                conn.close()
                raise failure(self.settings, exc) from None
            if row is None or row[0] is None or row[0] < max(MIGRATIONS):
                conn.close()
                raise HistoryStoreError(
                    "the history schema is missing or old: run `monitor-worker history migrate`"
                )
            self._conn = conn
            self._partitions.clear()
        return self._conn

    def _run(self, work: Any) -> Any:
        """Run ``work(conn)`` in one transaction; any database failure -> HistoryStoreError."""
        conn = self._db()
        try:
            with conn.transaction():
                return work(conn)
        except psycopg.errors.UndefinedTable:
            raise HistoryStoreError(
                "the history schema is missing or old: run `monitor-worker history migrate`"
            ) from None
        except psycopg.Error as exc:
            raise failure(self.settings, exc) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- partitions ---------------------------------------------------------------------------

    def _ensure_partitions(
        self, conn: psycopg.Connection[Any], table: str, ts: Iterable[int]
    ) -> None:
        wanted = {}
        for t in ts:
            start, end, suffix = _period(_PARTITIONED[table], t)
            wanted[f"{table}_{suffix}"] = (start, end)
        missing = {name: b for name, b in wanted.items() if name not in self._partitions}
        if not missing:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", DDL_LOCK)
            for name, (start, end) in sorted(missing.items()):
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(name),
                        sql.Identifier(table),
                        sql.Literal(start),
                        sql.Literal(end),
                    )
                )
        self._partitions.update(missing)

    def expire(self, now: float) -> dict[str, int]:
        """Drop whole partitions older than the retention (at most one beyond it remains),
        minute bins older than their life, and gaps older than the hour retention."""
        keep = {
            "monitor_minutes": self.minutes_retention_s,
            "monitor_minute_bins": float(self.bins_life_s),
            "monitor_hours": self.hours_retention_s,
            "monitor_days": self.hours_retention_s,
        }

        def work(conn: psycopg.Connection[Any]) -> dict[str, int]:
            dropped: dict[str, int] = {}
            rows = conn.execute(
                "SELECT p.relname, c.relname FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
                " WHERE p.relname = ANY(%s) AND p.relnamespace = c.relnamespace"
                " AND pg_table_is_visible(p.oid)",
                (list(keep),),
            ).fetchall()
            for parent, child in rows:
                suffix = child[len(parent) + 1 :]
                if not suffix.isdigit():
                    continue
                fmt = "%Y%m%d" if len(suffix) == 8 else "%Y%m"
                start = int(datetime.strptime(suffix, fmt).replace(tzinfo=UTC).timestamp())
                _, end, _ = _period(_PARTITIONED[parent], start)
                if end <= now - keep[parent]:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(child)))
                    self._partitions.discard(child)
                    dropped[parent] = dropped.get(parent, 0) + 1
            conn.execute("DELETE FROM monitor_gaps WHERE t1 < %s", (now - self.hours_retention_s,))
            return dropped

        return self._run(work)  # type: ignore[no-any-return]

    # -- writing ------------------------------------------------------------------------------

    def write(self, src: int, snapshots: Sequence[Snapshot], now: float) -> int:
        if not snapshots:
            return 0
        wanted = keys_of(snapshots)
        live = [
            (level, t)
            for (level, _, _, t) in wanted
            if not expired(level, t, now, self.minutes_retention_s, self.hours_retention_s)
        ]
        conn = self._db()
        try:
            minutes = [t for (level, t) in live if level == "m"]
            self._ensure_partitions(conn, "monitor_minutes", minutes)
            self._ensure_partitions(conn, "monitor_minute_bins", minutes)
            self._ensure_partitions(conn, "monitor_hours", [t for (lv, t) in live if lv == "h"])
            self._ensure_partitions(conn, "monitor_days", [t for (lv, t) in live if lv == "d"])
        except psycopg.Error as exc:
            raise failure(self.settings, exc) from None

        def work(conn: psycopg.Connection[Any]) -> int:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, src))
            stored = self._load(conn, src, wanted)
            rows = merge(snapshots, stored)
            self._upsert(conn, src, rows, now)
            return len(rows)

        return self._run(work)  # type: ignore[no-any-return]

    def _load(
        self, conn: psycopg.Connection[Any], src: int, wanted: set[RowKey]
    ) -> dict[RowKey, Row]:
        stored: dict[RowKey, Row] = {}
        for level, table in _TABLE_OF_LEVEL.items():
            keys = [k for k in wanted if k[0] == level]
            if not keys:
                continue
            kinds = [k[1] for k in keys]
            names = [k[2].encode() for k in keys]
            ts = [k[3] for k in keys]
            if level == "m":
                query = (
                    "SELECT r.kind, r.name, r.t, r.n, r.e, r.s, r.v, b.bins, r.r"
                    " FROM monitor_minutes r"
                    " LEFT JOIN monitor_minute_bins b"
                    " ON (b.kind, b.name, b.t, b.src) = (r.kind, r.name, r.t, r.src)"
                    " AND b.t BETWEEN %(t0)s AND %(t1)s"
                )
            else:
                query = (
                    f"SELECT r.kind, r.name, r.t, r.n, r.e, r.s, NULL, r.bins, r.r FROM {table} r"
                )
            query += (
                " JOIN unnest(%(kinds)b::text[], %(names)b::bytea[], %(ts)b::bigint[])"
                " AS w(kind, name, t) ON (w.kind, w.name, w.t) = (r.kind, r.name, r.t)"
                " WHERE r.src = %(src)s AND r.t BETWEEN %(t0)s AND %(t1)s"  # prunes partitions
            )
            params = {
                "kinds": kinds,
                "names": names,
                "ts": ts,
                "src": src,
                "t0": min(ts),
                "t1": max(ts),
            }
            for kind, name, t, n, e, s, v, bins, r in conn.execute(query, params):
                stored[(level, kind, bytes(name).decode(), t)] = Row(
                    n, e, s, v, decode_bins(bytes(bins)) if bins is not None else None, r=r
                )
        return stored

    def _upsert(
        self, conn: psycopg.Connection[Any], src: int, rows: Mapping[RowKey, Row], now: float
    ) -> None:
        by_level: dict[str, list[tuple[Any, ...]]] = {"m": [], "h": [], "d": [], "b": []}
        for (level, kind, name, t), row in rows.items():
            if expired(level, t, now, self.minutes_retention_s, self.hours_retention_s):
                continue
            raw = name.encode()
            if level == "m":
                by_level["m"].append((kind, raw, t, row.n, row.e, row.s, row.v, row.r))
                if row.bins is not None and t + self.bins_life_s > now:
                    by_level["b"].append((kind, raw, t, encode_bins(row.bins)))
            else:
                bins = encode_bins(row.bins) if row.bins is not None else None
                by_level[level].append((kind, raw, t, row.n, row.e, row.s, bins, row.r))
        statements = {
            "m": (
                "monitor_minutes",
                ["n", "e", "s", "v", "r"],
                ["bigint", "bigint", "float8", "float8", "bigint"],
            ),
            "h": (
                "monitor_hours",
                ["n", "e", "s", "bins", "r"],
                ["bigint", "bigint", "float8", "bytea", "bigint"],
            ),
            "d": (
                "monitor_days",
                ["n", "e", "s", "bins", "r"],
                ["bigint", "bigint", "float8", "bytea", "bigint"],
            ),
            "b": ("monitor_minute_bins", ["bins"], ["bytea"]),
        }
        for level, values in by_level.items():
            if not values:
                continue
            table, columns, types = statements[level]
            all_columns = ["kind", "name", "t", *columns]
            all_types = ["text", "bytea", "bigint", *types]
            query = sql.SQL(
                "INSERT INTO {table} (src, {cols}) SELECT %s, * FROM unnest({arrays})"
                " ON CONFLICT (kind, name, t, src) DO UPDATE SET {updates}"
            ).format(
                table=sql.Identifier(table),
                cols=sql.SQL(", ").join(map(sql.Identifier, all_columns)),
                arrays=sql.SQL(", ").join(sql.SQL("%b::" + t + "[]") for t in all_types),
                updates=sql.SQL(", ").join(
                    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns
                ),
            )
            params = [src, *(list(column) for column in zip(*values, strict=True))]
            conn.execute(query, params)

    def add_gaps(self, minutes: Iterable[int], now: float) -> None:
        ranges = merge_ranges(minutes)
        if not ranges:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "INSERT INTO monitor_gaps (t0, t1) SELECT * FROM unnest(%s::bigint[], %s::bigint[])"
                " ON CONFLICT DO NOTHING",
                ([r[0] for r in ranges], [r[1] for r in ranges]),
            )

        self._run(work)

    # -- reading ------------------------------------------------------------------------------

    def read(
        self, level: str, since: float, until: float, only: Mapping[str, str]
    ) -> list[tuple[str, str, int, Row]]:
        table = _TABLE_OF_LEVEL[level]
        period = {"m": 60, "h": 3600, "d": DAY_S}[level]
        extra = "r.v, NULL::bytea" if level == "m" else "NULL::float8, r.bins"
        query = (
            f"SELECT r.kind, r.name, r.t, r.n, r.e, r.s, {extra}, r.r FROM {table} r"
            " WHERE r.t > %s AND r.t <= %s"
        )
        params: list[Any] = [int(since) - period, int(until)]
        for code, name in only.items():
            query += " AND (r.kind <> %s OR r.name = %s)"
            params += [code, name.encode()]

        def work(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int, Row]]:
            out = []
            with conn.cursor(binary=True) as cur:
                for kind, name, t, n, e, s, v, bins, r in cur.execute(query, params):
                    packed = bytes(bins) if bins is not None else None
                    out.append((kind, bytes(name).decode(), t, Row(n, e, s, v, None, packed, r)))
            return out

        return self._run(work)  # type: ignore[no-any-return]

    def gaps(self, since: float, until: float) -> list[list[int]]:
        def work(conn: psycopg.Connection[Any]) -> list[list[int]]:
            rows = conn.execute(
                "SELECT t0, t1 FROM monitor_gaps WHERE t1 > %s AND t0 <= %s", (since, until)
            ).fetchall()
            return union(rows)

        return self._run(work)  # type: ignore[no-any-return]
