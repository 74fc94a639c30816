"""Pure window maths: time buckets, the response-time sketch, per-bucket deltas, window stats
(raw events are folded into deltas by ``fold``).

The sketch is DDSketch's logarithmic mapping with 1 % relative accuracy: a value ``x`` goes to
bin ``ceil(log(x) / log(gamma))`` with ``gamma = 1.01 / 0.99``, and a bin is reported as
``2 * gamma**i / (gamma + 1)``, within 1 % of every value in it. Bins add and subtract, so
minute buckets merge into a window exactly. Values under 1 µs share one zero bin.

Bins travel as text ``"i:n,i:n"`` because the Lua scripts that merge them read the same form.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from .config import BUCKET_S

log = logging.getLogger("monitor_worker.windows")


RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
INV_LOG_GAMMA = 1.0 / LOG_GAMMA
MIN_VALUE_S = 1e-6
ZERO_BIN = -99_999
OTHER = "__other__"


def bucket_of(ts: float) -> int:
    """The minute bucket holding unix time ``ts``."""
    return int(ts // BUCKET_S)


def window_start(now: float, window_s: int) -> int:
    """First bucket of the window ending at ``now``.

    Every event newer than ``now - window_s + BUCKET_S`` is inside; every event older than
    ``now - window_s - BUCKET_S`` is outside.
    """
    return bucket_of(now - window_s) + 1


def bin_of(value_s: float) -> int:
    if value_s < MIN_VALUE_S:
        return ZERO_BIN
    return math.ceil(math.log(value_s) * INV_LOG_GAMMA)


def bin_value(index: int) -> float:
    if index == ZERO_BIN:
        return 0.0
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def parse_bins(text: str | bytes | None) -> dict[int, int]:
    bins: dict[int, int] = {}
    if not text:
        return bins
    if isinstance(text, bytes):
        text = text.decode()
    for part in text.split(","):
        index, _, count = part.partition(":")
        bins[int(index)] = bins.get(int(index), 0) + int(count)
    return bins


def format_bins(bins: Mapping[int, int]) -> str:
    if 0 in bins.values():
        bins = {i: n for i, n in bins.items() if n}
    return ("%d:%d," * len(bins) % tuple(chain.from_iterable(bins.items())))[:-1]


def quantile(bins: Mapping[int, int], q: float) -> float | None:
    """Nearest-rank quantile (rank ceil(q*n)) of the sketch, within the sketch's accuracy."""
    total = sum(bins.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            return bin_value(index)
    return bin_value(max(bins))


# The kinds beyond requests and payments are stored as plain hash fields ``<kind>:<name>``,
# grouped in sections. Each section is named by its head field, a count that is > 0 wherever
# the name has data in the section (when it drops to 0 in the roll, the name's other fields of
# the section go with it). Field types: i (a count), f (a float sum), h (sketch bins),
# t (a text; the newest wins, and it is never subtracted).
TASKS, TASK_QUEUES, DB, CACHE, VALUES, RATIOS, QUERIES = "tn", "un", "dn", "kl", "vn", "rn", "qn"
SECTIONS: dict[str, dict[str, str]] = {
    # task attempts: events, runs, failures, retries, runtime sum and bins, waits, wait sum
    # and bins, the queue of the newest attempt
    TASKS: {
        "tn": "i", "tr": "i", "tf": "i", "ty": "i", "tt": "f", "th": "h",
        "tw": "i", "tx": "f", "tb": "h", "tq": "t",
    },
    # per queue the tasks were delivered from: events, runs, waits, wait sum and bins
    TASK_QUEUES: {"un": "i", "ur": "i", "uw": "i", "ux": "f", "ub": "h"},
    # per database alias: queries, errors, time sum and bins
    DB: {"dn": "i", "de": "i", "ds": "f", "dh": "h"},
    # per cache alias: lookups (keys looked up), hits
    CACHE: {"kl": "i", "kh": "i"},
    # custom value metrics: count, sum, bins; custom ratio metrics: count, successes
    VALUES: {"vn": "i", "vs": "f", "vh": "h"},
    RATIOS: {"rn": "i", "ro": "i"},
    # per endpoint, of requests tracked with a query count: requests, queries, bins
    QUERIES: {"qn": "i", "qs": "i", "qh": "h"},
}  # fmt: skip
FIELD_TYPES = {kind: t for fields_ in SECTIONS.values() for kind, t in fields_.items()}
HEAD_OF_FIELD = {kind: head for head, fields_ in SECTIONS.items() for kind in fields_}

Stats = dict[str, Any]  # field kind -> int | float | bins | str, of one name in one section


def merge_stats(into: Stats, other: Mapping[str, Any], sign: int = 1) -> None:
    """Add (or subtract) ``other``'s fields into ``into``; text fields are replaced (only when
    adding)."""
    for kind, value in other.items():
        t = FIELD_TYPES[kind]
        if t == "h":
            bins = into.setdefault(kind, {})
            for i, n in value.items():
                bins[i] = bins.get(i, 0) + sign * n
        elif t == "t":
            if sign > 0:
                into[kind] = value
        else:
            into[kind] = into.get(kind, 0) + sign * value


@dataclass
class ApiAcc:
    """Request statistics of one endpoint over some buckets."""

    count: int = 0
    errors: int = 0
    sum_s: float = 0.0
    at_or_below: int = 0
    bins: dict[int, int] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        """The summary's statistics of these requests (``count`` must be > 0)."""
        bins = {i: n for i, n in self.bins.items() if n > 0}
        return {
            "total_requests": self.count,
            "error_count": self.errors,
            "error_rate": 100.0 * self.errors / self.count,
            "avg_response_time": self.sum_s / self.count,
            "p95_response_time": quantile(bins, 0.95),
            "at_or_below_threshold": self.at_or_below,
        }

    def merge(self, other: ApiAcc) -> None:
        self.count += other.count
        self.errors += other.errors
        self.sum_s += other.sum_s
        self.at_or_below += other.at_or_below
        for i, n in other.bins.items():
            self.bins[i] = self.bins.get(i, 0) + n


@dataclass
class PayAcc:
    count: int = 0
    amount: float = 0.0


@dataclass
class Delta:
    """What one batch of raw events adds, per bucket."""

    api: dict[tuple[int, str], ApiAcc] = field(default_factory=dict)
    pay: dict[tuple[int, str], PayAcc] = field(default_factory=dict)
    counters: dict[tuple[int, str], int] = field(default_factory=dict)
    # (bucket, section head, name) -> fields, of the kinds beyond requests and payments
    stats: dict[tuple[int, str, str], Stats] = field(default_factory=dict)
    events: int = 0

    def count(self, bucket: int, name: str, n: int = 1) -> None:
        self.counters[bucket, name] = self.counters.get((bucket, name), 0) + n

    def section(self, bucket: int, head: str, name: str) -> Stats:
        """The fields of ``name`` in section ``head`` of ``bucket`` (counted as one event)."""
        self.events += 1
        key = (bucket, head, name)
        found = self.stats.get(key)
        if found is None:
            found = self.stats[key] = {head: 0}
        found[head] += 1
        return found


def cap_names(
    delta: Delta, refused_endpoints: set[str], refused_reasons: set[str], now: float
) -> None:
    """Fold refused names (over the cardinality caps) into ``__other__``, counting the events:
    API requests as ``folded``, payment failures as ``reasons_folded``."""
    folded = reasons_folded = 0
    if refused_endpoints:
        for key in [k for k in delta.api if k[1] in refused_endpoints]:
            acc = delta.api.pop(key)
            folded += acc.count
            delta.api.setdefault((key[0], OTHER), ApiAcc()).merge(acc)
    if refused_reasons:
        for key in [k for k in delta.pay if k[1] in refused_reasons]:
            pay = delta.pay.pop(key)
            reasons_folded += pay.count
            total = delta.pay.setdefault((key[0], OTHER), PayAcc())
            total.count += pay.count
            total.amount += pay.amount
    if folded:
        delta.count(bucket_of(now), "folded", folded)
    if reasons_folded:
        delta.count(bucket_of(now), "reasons_folded", reasons_folded)


def cap_sections(delta: Delta, refused: Mapping[str, set[str]], now: float) -> None:
    """Fold refused names of the sections (head -> names over its cap) into ``__other__``."""
    folded = 0
    for key in [k for k in delta.stats if k[2] in refused.get(k[1], ())]:
        stats = delta.stats.pop(key)
        folded += stats[key[1]]
        merge_stats(delta.stats.setdefault((key[0], key[1], OTHER), {}), stats)
    for (_, head, _), stats in delta.stats.items():
        if head == TASKS and stats.get("tq") in refused.get(TASK_QUEUES, ()):
            stats["tq"] = OTHER
    if folded:
        delta.count(bucket_of(now), "folded", folded)


@dataclass
class Window:
    """Statistics of one window, merged over shards; turned into the summary's sections."""

    api: dict[str, ApiAcc] = field(default_factory=dict)
    pay: dict[str, PayAcc] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    stats: dict[str, dict[str, Stats]] = field(default_factory=dict)  # section -> name -> fields

    def section(self, head: str) -> dict[str, Stats]:
        """The live names of one section (head count > 0), sorted."""
        found = self.stats.get(head, {})
        return {n: found[n] for n in sorted(found) if found[n].get(head, 0) > 0}

    def add_fields(self, fields: Mapping[bytes, bytes], sign: int = 1) -> None:
        """Add (or subtract) a bucket or roll hash as stored by the store's scripts."""
        api, names = self.api, _NameCache()
        for raw_key, raw_value in fields.items():
            kind, _, name_b = raw_key.partition(b":")
            if not name_b or kind == b"_":
                continue
            name = names[name_b]
            t = FIELD_TYPES.get(kind.decode("ascii", "replace"))
            if t is not None:
                k = kind.decode()
                stats = self.stats.setdefault(HEAD_OF_FIELD[k], {}).setdefault(name, {})
                if t == "h":
                    value: Any = parse_bins(raw_value)
                elif t == "t":
                    value = raw_value.decode("utf-8", "replace")
                else:
                    value = int(raw_value) if t == "i" else float(raw_value)
                merge_stats(stats, {k: value}, sign)
            elif kind == b"x":
                self.counters[name] = self.counters.get(name, 0) + sign * int(raw_value)
            elif kind in (b"pc", b"pa"):
                pay = self.pay.get(name)
                if pay is None:
                    pay = self.pay[name] = PayAcc()
                if kind == b"pc":
                    pay.count += sign * int(raw_value)
                else:
                    pay.amount += sign * float(raw_value)
            else:
                acc = api.get(name)
                if acc is None:
                    acc = api[name] = ApiAcc()
                if kind == b"c":
                    acc.count += sign * int(raw_value)
                elif kind == b"e":
                    acc.errors += sign * int(raw_value)
                elif kind == b"s":
                    acc.sum_s += sign * float(raw_value)
                elif kind == b"l":
                    acc.at_or_below += sign * int(raw_value)
                elif kind == b"h":
                    for i, n in parse_bins(raw_value).items():
                        acc.bins[i] = acc.bins.get(i, 0) + sign * n

    def add_delta(self, delta: Delta, first_bucket: int, last_bucket: int) -> None:
        for (bucket, endpoint), acc in delta.api.items():
            if first_bucket <= bucket <= last_bucket:
                self.api.setdefault(endpoint, ApiAcc()).merge(acc)
        for (bucket, reason), pay in delta.pay.items():
            if first_bucket <= bucket <= last_bucket:
                total = self.pay.setdefault(reason, PayAcc())
                total.count += pay.count
                total.amount += pay.amount
        for (bucket, name), n in delta.counters.items():
            if first_bucket <= bucket <= last_bucket:
                self.counters[name] = self.counters.get(name, 0) + n
        for (bucket, head, name), stats in delta.stats.items():
            if first_bucket <= bucket <= last_bucket:
                merge_stats(self.stats.setdefault(head, {}).setdefault(name, {}), stats)

    def api_section(self) -> dict[str, dict[str, Any]]:
        section: dict[str, dict[str, Any]] = {}
        queries = self.section(QUERIES)
        for endpoint in sorted(self.api):
            acc = self.api[endpoint]
            if acc.count > 0:
                section[endpoint] = acc.stats()
                q = queries.get(endpoint)
                if q is not None:
                    section[endpoint]["avg_queries"] = q.get("qs", 0) / q[QUERIES]
                    section[endpoint]["p95_queries"] = _p95(q, "qh")
        return section

    def tasks_section(self) -> dict[str, dict[str, Any]]:
        section = {}
        for name, t in self.section(TASKS).items():
            runs, failures = t.get("tr", 0), t.get("tf", 0)
            section[name] = {
                "runs": runs,
                "failures": failures,
                "failure_rate": 100.0 * failures / runs if runs > 0 else 0.0,
                "retries": t.get("ty", 0),
                "avg_runtime": _avg(t, "tt", "tr"),
                "p95_runtime": _p95(t, "th"),
                "avg_queue_wait": _avg(t, "tx", "tw"),
                "p95_queue_wait": _p95(t, "tb"),
                "queue": t.get("tq"),
            }
        return section

    def task_queues_section(self) -> dict[str, dict[str, Any]]:
        return {
            queue: {
                "tasks": q.get("ur", 0),
                "avg_queue_wait": _avg(q, "ux", "uw"),
                "p95_queue_wait": _p95(q, "ub"),
            }
            for queue, q in self.section(TASK_QUEUES).items()
        }

    def db_section(self) -> dict[str, dict[str, Any]]:
        return {
            alias: {
                "queries": d[DB],
                "errors": d.get("de", 0),
                "avg_query_time": _avg(d, "ds", DB),
                "p95_query_time": _p95(d, "dh"),
            }
            for alias, d in self.section(DB).items()
        }

    def cache_section(self) -> dict[str, dict[str, Any]]:
        return {
            alias: {
                "lookups": c[CACHE],
                "hits": c.get("kh", 0),
                "hit_rate": 100.0 * c.get("kh", 0) / c[CACHE],
            }
            for alias, c in self.section(CACHE).items()
        }

    def metrics_section(self) -> dict[str, dict[str, Any]]:
        """Custom metrics; a name recorded both as a value and as an event shows as a value."""
        section: dict[str, dict[str, Any]] = {}
        for name, r in self.section(RATIOS).items():
            ok = r.get("ro", 0)
            section[name] = {
                "kind": "ratio",
                "count": r[RATIOS],
                "ok": ok,
                "ok_rate": 100.0 * ok / r[RATIOS],
            }
        for name, v in self.section(VALUES).items():
            bins = {i: n for i, n in v.get("vh", {}).items() if n > 0}
            section[name] = {
                "kind": "value",
                "count": v[VALUES],
                "avg": _avg(v, "vs", VALUES),
                "p95": quantile(bins, 0.95),
                "max": bin_value(max(bins)) if bins else None,
            }
        return dict(sorted(section.items()))

    def payments_section(self) -> dict[str, Any]:
        live = {r: p for r, p in self.pay.items() if p.count > 0}
        total_amount = sum(p.amount for p in live.values())
        return {
            "failures_last_hour": sum(p.count for p in live.values()),
            "by_reason": {r: live[r].count for r in sorted(live, key=lambda r: -live[r].count)},
            "amount_total": _plain_number(total_amount),
            "amount_by_reason": {r: _plain_number(p.amount) for r, p in live.items()},
        }

    def summary(
        self,
        now: float,
        window_s: int,
        *,
        celery: Mapping[str, Any] | None = None,
        queue_broker: Mapping[str, Any] | None = None,
        pending_events: int = 0,
        pending_unread: int = 0,
    ) -> dict[str, Any]:
        """The ``get_metrics_summary`` document (its shape is in README.md) of this window,
        ending at ``now``."""
        return {
            "timestamp": now,
            "window_seconds": window_s,
            "api": self.api_section(),
            "payments": self.payments_section(),
            "tasks": self.tasks_section(),
            "task_queues": self.task_queues_section(),
            "db": self.db_section(),
            "cache": self.cache_section(),
            "metrics": self.metrics_section(),
            "celery": dict(celery or {}),
            "queue_broker": queue_broker,
            "pending_events": pending_events,
            "pending_unread": pending_unread,
            "dropped_events": self.dropped(),
            "endpoints_folded": self.counters.get("folded", 0),
            "reasons_folded": self.counters.get("reasons_folded", 0),
        }

    def dropped(self) -> dict[str, int]:
        c = self.counters
        return {
            "malformed": c.get("malformed", 0),
            "buffer_overflow": c.get("overflow", 0),
            "raw_trimmed": c.get("trimmed", 0),
            "too_old": c.get("too_old", 0),
        }


def _avg(stats: Stats, total: str, count: str) -> float | None:
    n = stats.get(count, 0)
    return stats.get(total, 0) / n if n > 0 else None


def _p95(stats: Stats, bins_kind: str) -> float | None:
    return quantile({i: n for i, n in stats.get(bins_kind, {}).items() if n > 0}, 0.95)


class _NameCache(dict[bytes, str]):
    """Field names decoded once per hash (each endpoint has five fields)."""

    def __missing__(self, raw: bytes) -> str:
        name = self[raw] = raw.decode("utf-8", "replace")
        return name


def _plain_number(value: float) -> float | int:
    rounded = round(float(value), 6)
    return int(rounded) if rounded.is_integer() else rounded
