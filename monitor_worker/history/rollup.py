"""Pure roll-up maths of the history: the kinds table, merging a minute's new snapshot into
its minute, hour and day rows, and shaping queries (rows and their encoding: codec.py).

Three levels are kept: minute rows (``m``), hour rows (``h``) and day rows (``d``), each
``(kind, name, t)`` with ``t`` the start of its period (UTC). Counter kinds (``merge="sum"``)
keep count ``n``, errors ``e`` and a sum ``s``; a minute row also keeps its P95 ``v``, and
hour and day rows keep the sketch bins, so any longer step merges bins (a P95 of a day is
never an average of P95s). Gauge kinds keep a maximum ``n`` and the last value ``e`` sampled
at ``s``.

Exactly once: a minute bucket only grows, so its count is a version. A snapshot newer than
the stored minute row replaces it, and the difference (new - stored) is added to the hour
and the day, in one atomic step of the store. The stored minute row keeps its bins as long
as its bucket can still change, so the difference of the bins is known too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..windows import CACHE, DB, RATIOS, TASK_QUEUES, TASKS, VALUES, Window, quantile
from .codec import Row, RowKey, Snapshot

MINUTE_S = 60
HOUR_S = 3600
DAY_S = 86400
STEPS = {"1m": MINUTE_S, "1h": HOUR_S, "6h": 6 * HOUR_S, "1d": DAY_S}
LEVEL_OF_STEP = {"1m": "m", "1h": "h", "6h": "h", "1d": "d"}
LEVEL_S = {"m": MINUTE_S, "h": HOUR_S, "d": DAY_S}


# -- the kinds table ---------------------------------------------------------------------------


def _api_rows(window: Window) -> dict[str, Row]:
    return {
        name: Row(acc.count, acc.errors, acc.sum_s, None, {i: c for i, c in acc.bins.items() if c})
        for name, acc in window.api.items()
        if acc.count > 0
    }


def _payment_rows(window: Window) -> dict[str, Row]:
    return {name: Row(p.count, 0, p.amount) for name, p in window.pay.items() if p.count > 0}


def _api_point(t: int, row: Row) -> dict[str, Any]:
    p95 = row.p95()
    return {
        "t": t,
        "requests": row.n,
        "errors": row.e,
        "error_rate": 100.0 * row.e / row.n if row.n else 0.0,
        "avg_response_time": row.s / row.n if row.n else None,
        "p95_response_time": p95,
    }


def _queue_point(t: int, row: Row) -> dict[str, Any]:
    return {"t": t, "max_length": row.n, "last_length": row.e}


def _per_name(kind: Kind, rows: Mapping[str, Mapping[int, Row]]) -> dict[str, Any]:
    return {
        name: [kind.point(t, r) for t, r in sorted(ts.items())] for name, ts in sorted(rows.items())
    }


def _payments(kind: Kind, rows: Mapping[str, Mapping[int, Row]]) -> list[dict[str, Any]]:
    by_t: dict[int, dict[str, Row]] = {}
    for name, ts in rows.items():
        for t, row in ts.items():
            by_t.setdefault(t, {})[name] = row
    out = []
    for t in sorted(by_t):
        reasons = by_t[t]
        out.append(
            {
                "t": t,
                "failures": sum(r.n for r in reasons.values()),
                "amount_total": _plain(sum(r.s for r in reasons.values())),
                "by_reason": {name: reasons[name].n for name in sorted(reasons)},
                "amount_by_reason": {name: _plain(reasons[name].s) for name in sorted(reasons)},
            }
        )
    return out


def _plain(value: float) -> float | int:
    rounded = round(float(value), 6)
    return int(rounded) if rounded.is_integer() else rounded


@dataclass(frozen=True)
class Kind:
    """One kind of metric the history keeps. Adding a kind is one entry in KINDS."""

    code: str  # one letter: in Redis fields and the PostgreSQL ``kind`` column
    section: str  # its section of get_history's answer
    merge: str  # "sum" (counters; the count is the version) or "gauge" (max and last)
    has_bins: bool
    rows_of: Callable[[Window], dict[str, Row]] | None  # a minute bucket's rows (sum kinds)
    point: Callable[[int, Row], dict[str, Any]] = _queue_point
    section_of: Callable[[Kind, Mapping[str, Mapping[int, Row]]], Any] = _per_name
    by_endpoint: bool = False  # get_history(endpoint=...) filters this kind's names


def _fields(
    head: str, e: str = "", s: str = "", bins: str = "", r: str = ""
) -> Callable[[Window], dict[str, Row]]:
    """Rows of one of the window's field sections (windows.SECTIONS): ``n`` is the section's
    head count (it grows with every event of the name, so it is the version), the other slots
    take the fields named."""

    def rows_of(window: Window) -> dict[str, Row]:
        out = {}
        for name, f in window.section(head).items():
            found = f.get(bins)
            row = Row(f[head], f.get(e, 0), float(f.get(s, 0.0)), r=f.get(r, 0))
            if bins:
                row.bins = {i: c for i, c in (found or {}).items() if c > 0}
            out[name] = row
        return out

    return rows_of


def _ratio(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _task_point(t: int, row: Row) -> dict[str, Any]:
    return {
        "t": t,
        "runs": row.r,
        "failures": row.e,
        "failure_rate": _ratio(row.e, row.r),
        "avg_runtime": row.s / row.r if row.r else None,
        "p95_runtime": row.p95(),
    }


def _task_queue_point(t: int, row: Row) -> dict[str, Any]:
    return {
        "t": t,
        "tasks": row.r,
        "avg_queue_wait": row.s / row.e if row.e else None,
        "p95_queue_wait": row.p95(),
    }


def _db_point(t: int, row: Row) -> dict[str, Any]:
    return {
        "t": t,
        "queries": row.n,
        "errors": row.e,
        "avg_query_time": row.s / row.n if row.n else None,
        "p95_query_time": row.p95(),
    }


def _cache_point(t: int, row: Row) -> dict[str, Any]:
    return {"t": t, "lookups": row.n, "hits": row.e, "hit_rate": _ratio(row.e, row.n)}


def _value_point(t: int, row: Row) -> dict[str, Any]:
    avg = row.s / row.n if row.n else None
    return {"t": t, "kind": "value", "count": row.n, "avg": avg, "p95": row.p95()}


def _ratio_point(t: int, row: Row) -> dict[str, Any]:
    return {"t": t, "kind": "ratio", "count": row.n, "ok": row.e, "ok_rate": _ratio(row.e, row.n)}


KINDS: dict[str, Kind] = {
    k.code: k
    for k in (
        Kind("a", "api", "sum", True, _api_rows, _api_point, by_endpoint=True),
        Kind("p", "payments", "sum", False, _payment_rows, section_of=_payments),
        Kind("q", "celery", "gauge", False, None),
        # the kinds of windows.SECTIONS: a task's attempts, runs, failures, runtime
        Kind("t", "tasks", "sum", True, _fields(TASKS, "tf", "tt", "th", "tr"), _task_point),
        # a task queue's deliveries, waits measured, wait sum and bins, tasks run
        Kind("u", "task_queues", "sum", True, _fields(TASK_QUEUES, "uw", "ux", "ub", "ur"),
             _task_queue_point),
        Kind("d", "db", "sum", True, _fields(DB, "de", "ds", "dh"), _db_point),
        Kind("k", "cache", "sum", False, _fields(CACHE, "kh"), _cache_point),
        # custom metrics, values and ratios (events) side by side in one section
        Kind("v", "metrics", "sum", True, _fields(VALUES, s="vs", bins="vh"), _value_point),
        Kind("r", "metrics", "sum", False, _fields(RATIOS, "ro"), _ratio_point),
    )
}  # fmt: skip
API, PAYMENTS, QUEUES = KINDS["a"], KINDS["p"], KINDS["q"]


def snapshots_of_bucket(window: Window, minute_t: int) -> list[Snapshot]:
    """The rows of every counter kind in one minute bucket (read into ``window``)."""
    out: list[Snapshot] = []
    for kind in KINDS.values():
        if kind.rows_of is not None:
            out += [(kind.code, name, minute_t, row) for name, row in kind.rows_of(window).items()]
    return out


def queue_snapshots(
    name: str, samples: Iterable[tuple[float, int]], last_minute_t: int
) -> list[Snapshot]:
    """Per closed minute (start <= ``last_minute_t``): the max and the last length sampled."""
    rows: dict[int, Row] = {}
    for ts, length in sorted(samples):
        t = int(ts // MINUTE_S) * MINUTE_S
        if t > last_minute_t:
            continue
        row = rows.get(t)
        if row is None:
            rows[t] = Row(length, length, ts)
        else:
            row.n = max(row.n, length)
            row.e, row.s = length, ts
    return [(QUEUES.code, name, t, row) for t, row in rows.items()]


# -- merging snapshots into rows -----------------------------------------------------------------


def period_start(level: str, t: int) -> int:
    return t - t % LEVEL_S[level]


def expired(level: str, t: int, now: float, minutes_s: float, hours_s: float) -> bool:
    """True when the period ended longer ago than its level's retention: nothing to keep."""
    return t + LEVEL_S[level] + (minutes_s if level == "m" else hours_s) <= now


def keys_of(snapshots: Iterable[Snapshot]) -> set[RowKey]:
    """The stored rows a merge of ``snapshots`` reads."""
    keys: set[RowKey] = set()
    for code, name, t, _ in snapshots:
        keys |= {("m", code, name, t), ("h", code, name, period_start("h", t))}
        keys.add(("d", code, name, period_start("d", t)))
    return keys


def _gauge(old: Row | None, new: Row) -> Row:
    if old is None:
        return Row(new.n, new.e, new.s)
    last = new if new.s >= old.s else old
    return Row(max(old.n, new.n), last.e, last.s)


def _same(a: Row | None, b: Row) -> bool:
    return a is not None and (a.n, a.e, a.s) == (b.n, b.e, b.s)


def merge(snapshots: Iterable[Snapshot], stored: Mapping[RowKey, Row]) -> dict[RowKey, Row]:
    """The rows to write so that ``stored`` reflects ``snapshots`` exactly once.

    A counter snapshot not newer (by count) than its stored minute changes nothing, so a
    snapshot applied twice, or an older one applied after a newer, adds nothing.
    """
    out: dict[RowKey, Row] = {}

    def current(key: RowKey) -> Row | None:
        return out.get(key, stored.get(key))

    for code, name, t, new in snapshots:
        kind = KINDS[code]
        mkey: RowKey = ("m", code, name, t)
        old = current(mkey)
        upper: list[RowKey] = [
            ("h", code, name, period_start("h", t)),
            ("d", code, name, period_start("d", t)),
        ]
        if kind.merge == "gauge":
            merged = _gauge(old, new)
            if _same(old, merged):
                continue
            out[mkey] = merged
            for key in upper:
                out[key] = _gauge(current(key), merged)
            continue
        if old is not None and new.n <= old.n:
            continue
        row = Row(new.n, new.e, new.s, None, dict(new.bins) if new.bins is not None else None)
        row.r = new.r
        if kind.has_bins:
            row.v = quantile(new.bins or {}, 0.95)
        out[mkey] = row
        delta = Row(new.n, new.e, new.s, None, dict(new.bins or {}), r=new.r)
        if old is not None:
            delta.add(Row(old.n, old.e, old.s, None, old.bins, r=old.r), -1)
        for key in upper:
            total = out.get(key)
            if total is None:  # a copy of the stored row, owned by ``out`` from now on
                cur = stored.get(key)
                total = out[key] = Row(bins={} if kind.has_bins else None)
                if cur is not None:
                    total.add(cur)
            total.add(delta)
            if not kind.has_bins:
                total.bins = None
    return out


# -- queries --------------------------------------------------------------------------------------


def check_step(step: str, since: float, now: float, minutes_retention_s: float) -> int:
    """Seconds of ``step``; ValueError for an unknown step, or ``1m`` reaching back further
    than minute rows are kept."""
    if step not in STEPS:
        raise ValueError(f"step must be one of {', '.join(STEPS)} (got {step!r})")
    if step == "1m" and since < now - minutes_retention_s - MINUTE_S:
        raise ValueError(
            f"step: 1m rows are kept for {minutes_retention_s / 3600:g} h; use 1h or longer for "
            "an older since"
        )
    return STEPS[step]


def check_range(since: Any, until: Any) -> tuple[float, float]:
    for name, value in (("since", since), ("until", until)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name} must be unix seconds (an int or float), got {value!r}")
    if until < since:
        raise ValueError(f"until ({until}) must not be before since ({since})")
    return float(since), float(until)


@dataclass
class Series:
    """Rows read from a store, grouped into steps: kind -> name -> step start -> row."""

    step_s: int
    rows: dict[str, dict[str, dict[int, Row]]] = field(default_factory=dict)

    def add(self, code: str, name: str, t: int, row: Row) -> None:
        start = t - t % self.step_s
        by_t = self.rows.setdefault(code, {}).setdefault(name, {})
        cur = by_t.get(start)
        if cur is None:
            by_t[start] = row  # rows read are the caller's to give away
        elif KINDS[code].merge == "gauge":
            by_t[start] = _gauge(cur, row)
        else:
            cur.unpack()
            row.unpack()
            if cur.bins is None and row.bins is None and cur.v is not None:
                cur.v = max(cur.v, row.v or 0.0)  # one minute of __other__ over shards
            cur.add(row)

    def document(self, gaps: list[list[int]]) -> dict[str, Any]:
        doc: dict[str, Any] = {"step_seconds": self.step_s, "gaps": gaps}
        for kind in KINDS.values():
            section = kind.section_of(kind, self.rows.get(kind.code, {}))
            if isinstance(section, dict) and isinstance(doc.get(kind.section), dict):
                section = {**section, **doc[kind.section]}  # a value metric wins, as in the window
            doc[kind.section] = section
        return doc


def union(ranges: Iterable[Sequence[int]]) -> list[list[int]]:
    """[t0, t1) ranges, sorted and joined where they touch or overlap."""
    out: list[list[int]] = []
    for t0, t1 in sorted((int(a), int(b)) for a, b in ranges):
        if out and out[-1][1] >= t0:
            out[-1][1] = max(out[-1][1], t1)
        else:
            out.append([t0, t1])
    return out


def merge_ranges(minutes: Iterable[int]) -> list[list[int]]:
    """Minute starts -> sorted [t0, t1) ranges."""
    return union([t, t + MINUTE_S] for t in minutes)
