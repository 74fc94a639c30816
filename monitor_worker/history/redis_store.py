"""History in Redis (the default): hashes with a TTL, one hash tag per source shard.

Memory stays small: a minute row is 42 bytes packed with the other minutes of its hour in one
field, and bins are dense counts as narrow as their largest count needs (history/rollup.py).
Writes are optimistic: rows are read, merged in Python, and written by one script only if no
field changed meanwhile (scripts.HISTORY_CAS), else read and merged again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .. import scripts
from ..config import Settings
from ..keys import Keys
from .codec import (
    Row,
    RowKey,
    Snapshot,
    decode_bins,
    decode_minutes,
    decode_period,
    encode_bins,
    encode_minutes,
    encode_period,
)
from .rollup import (
    KINDS,
    LEVEL_S,
    MINUTE_S,
    expired,
    keys_of,
    merge,
    merge_ranges,
    union,
)

log = logging.getLogger("monitor_worker.history")

CAS_ATTEMPTS = 20

Physical = tuple[str, bytes]  # (key, field)


class RedisHistory:
    """History rows in the metrics store (or any Redis/Valkey/Cluster client)."""

    name = "redis"

    def __init__(self, client: Any, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix, settings.shards)
        self.minutes_retention_s, self.hours_retention_s = settings.history_retention
        self.bins_life_s = settings.history_bins_life_s  # a minute keeps its bins this long
        self._cas = client.register_script(scripts.HISTORY_CAS)

    # -- writing -----------------------------------------------------------------------------

    def _physical(self, src: int, key: RowKey) -> Physical:
        level, code, name, t = key
        hk = self.keys.history(src)
        if level == "m":
            t = t - t % 3600
        return hk.rows(level, code, t), name.encode("utf-8", "surrogatepass")

    def _expire_at(self, key: RowKey) -> int:
        level, _, _, t = key
        if level == "m":
            return t - t % 3600 + 3600 + int(self.minutes_retention_s)
        return t + LEVEL_S[level] + int(self.hours_retention_s)

    def _bins_key(self, src: int, code: str, name: str, t: int) -> Physical:
        return self.keys.history(src).rows("mb", code, t), name.encode("utf-8", "surrogatepass")

    def write(self, src: int, snapshots: Sequence[Snapshot], now: float) -> int:
        """Merge minute snapshots of one source shard into its rows; returns rows written."""
        if not snapshots:
            return 0
        wanted = keys_of(snapshots)
        for _ in range(CAS_ATTEMPTS):
            raw = self._read_physical(src, wanted)
            stored = self._decode(src, wanted, raw)
            rows = merge(snapshots, stored)
            if not rows:
                return 0
            if self._write(src, rows, raw, now):
                return len(rows)
        raise RuntimeError(f"history rows of shard {src} kept changing; gave up after retries")

    def _read_physical(self, src: int, wanted: Iterable[RowKey]) -> dict[Physical, bytes | None]:
        fields: list[Physical] = []
        for key in wanted:
            fields.append(self._physical(src, key))
            level, code, name, t = key
            if level == "m" and KINDS[code].has_bins:
                fields.append(self._bins_key(src, code, name, t))
        fields = list(dict.fromkeys(fields))
        pipe = self.client.pipeline(transaction=False)
        for hkey, field in fields:
            pipe.hget(hkey, field)
        return dict(zip(fields, pipe.execute(), strict=True))

    def _decode(
        self, src: int, wanted: Iterable[RowKey], raw: Mapping[Physical, bytes | None]
    ) -> dict[RowKey, Row]:
        stored: dict[RowKey, Row] = {}
        for key in wanted:
            level, code, name, t = key
            blob = raw[self._physical(src, key)]
            if blob is None:
                continue
            if level != "m":
                stored[key] = decode_period(blob)
                continue
            row = decode_minutes(blob).get((t % 3600) // MINUTE_S)
            if row is None:
                continue
            if KINDS[code].has_bins:
                bins = raw.get(self._bins_key(src, code, name, t))
                row.bins = decode_bins(bins) if bins is not None else None
            stored[key] = row
        return stored

    def _write(
        self,
        src: int,
        rows: Mapping[RowKey, Row],
        raw: Mapping[Physical, bytes | None],
        now: float,
    ) -> bool:
        new: dict[Physical, tuple[bytes, int]] = {}
        hours: dict[Physical, dict[int, Row]] = {}
        for key, row in rows.items():
            level, code, name, t = key
            if expired(level, t, now, self.minutes_retention_s, self.hours_retention_s):
                continue
            expire_at = self._expire_at(key)
            phys = self._physical(src, key)
            if level != "m":
                new[phys] = (encode_period(row), expire_at)
                continue
            minutes = hours.get(phys)
            if minutes is None:
                minutes = hours[phys] = decode_minutes(raw.get(phys) or b"")
            minutes[(t % 3600) // MINUTE_S] = row
            new[phys] = (encode_minutes(minutes), expire_at)
            if row.bins is not None and t + self.bins_life_s > now:
                new[self._bins_key(src, code, name, t)] = (
                    encode_bins(row.bins),
                    int(t + self.bins_life_s),
                )
        if not new:
            return True
        key_index: dict[str, int] = {}
        args: list[Any] = [len(new)]
        for (hkey, field), (value, expire_at) in new.items():
            index = key_index.setdefault(hkey, len(key_index) + 1)
            old = raw.get((hkey, field))
            args += [index, field, "0" if old is None else "1", old or b"", value, expire_at]
        return bool(self._cas(keys=list(key_index), args=args))

    def add_gaps(self, minutes: Iterable[int], now: float) -> None:
        ranges = merge_ranges(minutes)
        if not ranges:
            return
        key = self.keys.history_gaps
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(key, {f"{t0}:{t1}": t0 for t0, t1 in ranges})
        pipe.zremrangebyscore(key, "-inf", now - self.hours_retention_s)
        pipe.expire(key, int(self.hours_retention_s))
        pipe.execute()

    def expire(self, now: float) -> dict[str, int]:
        """Retention: every key carries a TTL, so nothing is left to drop."""
        return {}

    # -- reading -----------------------------------------------------------------------------

    def read(
        self, level: str, since: float, until: float, only: Mapping[str, str]
    ) -> list[tuple[str, str, int, Row]]:
        """Rows of ``level`` with ``since <= t + period`` and ``t <= until``; ``only`` maps a
        kind letter to the one name wanted of it."""
        key_s = 3600 if level == "m" else LEVEL_S[level]
        starts = range(int(since) - int(since) % key_s, int(until) + 1, key_s)
        plan: list[tuple[str, str | None, int]] = []
        pipe = self.client.pipeline(transaction=False)
        for src in range(self.settings.shards):
            hk = self.keys.history(src)
            for code in KINDS:
                name = only.get(code)
                for t in starts:
                    key = hk.rows(level, code, t)
                    if name is None:
                        pipe.hgetall(key)
                    else:
                        pipe.hget(key, name.encode("utf-8", "surrogatepass"))
                    plan.append((code, name, t))
        out: list[tuple[str, str, int, Row]] = []
        low = since - LEVEL_S[level]
        for (code, name, t), reply in zip(plan, pipe.execute(), strict=True):
            if name is not None:
                reply = {} if reply is None else {name: reply}
            for raw_name, blob in reply.items():
                text = _text(raw_name)
                if level == "m":
                    for minute, row in decode_minutes(blob).items():
                        mt = t + minute * MINUTE_S
                        if low < mt <= until:
                            out.append((code, text, mt, row))
                elif low < t <= until:
                    out.append((code, text, t, decode_period(blob, packed=True)))
        return out

    def gaps(self, since: float, until: float) -> list[list[int]]:
        members = self.client.zrangebyscore(self.keys.history_gaps, "-inf", until)
        out = []
        for member in members:
            t0, _, t1 = member.decode().partition(":")
            if int(t1) > since:
                out.append([int(t0), int(t1)])
        return union(out)

    def close(self) -> None:
        """The client belongs to the caller."""


def _text(name: bytes | str) -> str:
    return name.decode("utf-8", "surrogatepass") if isinstance(name, bytes) else name
