"""Pure window maths: time buckets, the response-time sketch, folding raw events, window stats.

The sketch is DDSketch's logarithmic mapping with 1 % relative accuracy: a value ``x`` goes to
bin ``ceil(log(x) / log(gamma))`` with ``gamma = 1.01 / 0.99``, and a bin is reported as
``2 * gamma**i / (gamma + 1)``, within 1 % of every value in it. Bins add and subtract, so
minute buckets merge into a window exactly. Values under 1 µs share one zero bin.

Bins travel as text ``"i:n,i:n"`` because the Lua scripts that merge them read the same form.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import BUCKET_S
from .events import MAX_AMOUNT, MAX_RESPONSE_TIME_S, element_lines

log = logging.getLogger("monitor_worker.windows")

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
MIN_VALUE_S = 1e-6
ZERO_BIN = -99_999
OTHER = "__other__"
MAX_OVERFLOW_COUNT = 2**40


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
    return math.ceil(math.log(value_s) / LOG_GAMMA)


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
    return ",".join(f"{i}:{n}" for i, n in bins.items() if n)


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
    events: int = 0

    def count(self, bucket: int, name: str, n: int = 1) -> None:
        self.counters[bucket, name] = self.counters.get((bucket, name), 0) + n


def fold(
    entries: Iterable[bytes],
    *,
    now: float,
    error_status_min: int,
    threshold_s: float,
    oldest_bucket: int,
) -> Delta:
    """Fold raw-list entries into per-bucket deltas.

    A malformed entry is skipped and counted (bucket of ``now``); an event stamped in the
    future counts in the bucket of ``now``; one older than ``oldest_bucket`` is counted as
    ``too_old``.
    """
    delta = Delta()
    now_bucket = bucket_of(now)
    api = delta.api
    lines: list[bytes] = []
    for entry in entries:
        lines += element_lines(entry)
    names: dict[bytes, str | None] = {}
    log_, inv_log_gamma, ceil = math.log, 1.0 / LOG_GAMMA, math.ceil
    malformed = 0
    for line in lines:
        try:
            kind = line[:2]
            if kind == b"a|":
                _, ts_b, rt_b, st_b, name_b = line.split(b"|", 4)
                ts = float(ts_b)
                rt = float(rt_b)
                status = int(st_b)
                if not (
                    0.0 <= rt <= MAX_RESPONSE_TIME_S and 100 <= status <= 599 and 0 < ts < 1e11
                ):
                    raise ValueError("out of range")
                endpoint = names.get(name_b, "")
                if endpoint == "":
                    endpoint = names[name_b] = _name_of(name_b)
                if endpoint is None:
                    raise ValueError("bad endpoint")
                bucket = int(ts // BUCKET_S)
                if bucket > now_bucket:
                    bucket = now_bucket
                elif bucket < oldest_bucket:
                    delta.count(now_bucket, "too_old")
                    continue
                acc = api.get((bucket, endpoint))
                if acc is None:
                    acc = api[bucket, endpoint] = ApiAcc()
                acc.count += 1
                if status >= error_status_min:
                    acc.errors += 1
                acc.sum_s += rt
                if rt <= threshold_s:
                    acc.at_or_below += 1
                b = ZERO_BIN if rt < MIN_VALUE_S else ceil(log_(rt) * inv_log_gamma)
                bins = acc.bins
                bins[b] = bins.get(b, 0) + 1
            elif kind == b"p|":
                _, ts_b, amount_b, name_b = line.split(b"|", 3)
                ts = float(ts_b)
                amount = float(amount_b)
                if not (0.0 <= amount <= MAX_AMOUNT and 0 < ts < 1e11):
                    raise ValueError("out of range")
                reason = _name_of(name_b)
                if reason is None:
                    raise ValueError("bad reason")
                bucket = min(int(ts // BUCKET_S), now_bucket)
                if bucket < oldest_bucket:
                    delta.count(now_bucket, "too_old")
                    continue
                pay = delta.pay.get((bucket, reason))
                if pay is None:
                    pay = delta.pay[bucket, reason] = PayAcc()
                pay.count += 1
                pay.amount += amount
                delta.events += 1
            elif kind == b"o|":
                _, _ts_b, n_b = line.split(b"|", 2)
                n = int(n_b)
                if not 0 <= n <= MAX_OVERFLOW_COUNT:
                    raise ValueError("negative")
                delta.count(now_bucket, "overflow", n)
            else:
                raise ValueError("unknown kind")
        except (ValueError, TypeError, OverflowError):
            malformed += 1
    delta.events += sum(acc.count for acc in api.values())
    if malformed:
        delta.count(now_bucket, "malformed", malformed)
        log.warning("skipped %d malformed raw entries", malformed)
    return delta


_ESCAPE = re.compile(rb"\\(.)", re.S)


def _unescape(match: re.Match[bytes]) -> bytes:
    return b"\n" if match.group(1) == b"n" else match.group(1)


def _name_of(raw: bytes) -> str | None:
    if b"\\" in raw:
        raw = _ESCAPE.sub(_unescape, raw)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not name or len(name) > 200:
        return None
    return name


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


@dataclass
class Window:
    """Statistics of one window, merged over shards; turned into the summary's sections."""

    api: dict[str, ApiAcc] = field(default_factory=dict)
    pay: dict[str, PayAcc] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def add_fields(self, fields: Mapping[bytes, bytes], sign: int = 1) -> None:
        """Add (or subtract) a bucket or roll hash as stored by the store's scripts."""
        api, names = self.api, _NameCache()
        for raw_key, raw_value in fields.items():
            kind, _, name_b = raw_key.partition(b":")
            if not name_b or kind == b"_":
                continue
            name = names[name_b]
            if kind == b"x":
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

    def api_section(self) -> dict[str, dict[str, Any]]:
        section: dict[str, dict[str, Any]] = {}
        for endpoint in sorted(self.api):
            acc = self.api[endpoint]
            if acc.count > 0:
                section[endpoint] = acc.stats()
        return section

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


class _NameCache(dict[bytes, str]):
    """Field names decoded once per hash (each endpoint has five fields)."""

    def __missing__(self, raw: bytes) -> str:
        name = self[raw] = raw.decode("utf-8", "replace")
        return name


def _plain_number(value: float) -> float | int:
    rounded = round(float(value), 6)
    return int(rounded) if rounded.is_integer() else rounded
