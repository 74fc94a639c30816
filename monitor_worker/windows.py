"""Pure window maths: time buckets, the response-time sketch, folding raw events, window stats.

The sketch is DDSketch's logarithmic mapping with 1 % relative accuracy: a value ``x`` goes to
bin ``ceil(log(x) / log(gamma))`` with ``gamma = 1.01 / 0.99``, and a bin is reported as
``2 * gamma**i / (gamma + 1)``, within 1 % of every value in it. Bins add and subtract, so
minute buckets merge into a window exactly. Values under 1 µs share one zero bin.

Bins travel as text ``"i:n,i:n"`` because the Lua scripts that merge them read the same form.
"""

from __future__ import annotations

import collections
import logging
import math
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, islice
from operator import le
from typing import Any

from .config import BUCKET_S
from .events import (
    API,
    MAX_AMOUNT,
    MAX_COUNT,
    MAX_METRIC_VALUE,
    MAX_RESPONSE_TIME_S,
    OVERFLOW,
    PAYMENT,
    QUERY,
    RATIO,
    TASK,
    VALUE,
    chunk_blocks,
    decode_runs,
    element_count,
    element_lines,
    overflow_count,
    split_task_name,
)
from .events import (
    CACHE as CACHE_KIND,
)
from .events import (
    QUERIES as QUERIES_KIND,
)

log = logging.getLogger("monitor_worker.windows")

# Counter.update's C helper: adds one per element to a plain dict. (Bins stay plain dicts: a
# Counter is 2-3x slower to index, and windows index bins everywhere.)
_count_into: Callable[[dict[int, int], Iterable[int]], None] = collections._count_elements  # type: ignore[attr-defined]

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
INV_LOG_GAMMA = 1.0 / LOG_GAMMA
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


def _add_value(stats: Stats, total: str, bins_kind: str, value: float) -> None:
    """One value into a distribution's sum and sketch fields."""
    stats[total] = stats.get(total, 0) + value
    bins = stats.setdefault(bins_kind, {})
    b = bin_of(value)
    bins[b] = bins.get(b, 0) + 1


def _observe(stats: Stats, count: str, total: str, bins_kind: str, value: float) -> None:
    """One value into a distribution's count, sum and sketch fields."""
    stats[count] = stats.get(count, 0) + 1
    _add_value(stats, total, bins_kind, value)


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


def fold(
    entries: Iterable[bytes],
    *,
    now: float,
    error_status_min: int,
    threshold_s: float,
    oldest_bucket: int,
) -> Delta:
    """Fold raw-list entries (chunks of this version, text elements of the previous one)
    into per-bucket deltas.

    A malformed entry is skipped and counted (bucket of ``now``); an event stamped in the
    future counts in the bucket of ``now``; one older than ``oldest_bucket`` is counted as
    ``too_old``.
    """
    folder = _Folder(now, error_status_min, threshold_s, oldest_bucket)
    lines: list[bytes] = []
    for entry in entries:
        try:
            blocks = chunk_blocks(entry)
        except ValueError:
            folder.malformed += element_count(entry)
            continue
        if blocks is None:
            lines += element_lines(entry)
            continue
        for kind, events, payload in blocks:
            try:
                if kind == OVERFLOW:
                    folder.overflow(overflow_count(payload))
                    continue
                fold_block = folder.block_folders.get(kind)
                if fold_block is None:
                    raise ValueError(f"unknown kind {kind!r}")
                names, counts, ts, values = decode_runs(kind, payload, events)
            except ValueError:
                folder.malformed += events
                continue
            fold_block(names, counts, ts, *values)
    if lines:
        folder.lines(lines)
    return folder.finish()


Runs = Sequence[int]  # events per run, in the order of the names; the columns follow it


class _Folder:
    """Folds the blocks of one fold call into a Delta; one small method per kind, each taking
    a block's names (undecoded), run lengths and columns."""

    def __init__(
        self, now: float, error_status_min: int, threshold_s: float, oldest_bucket: int
    ) -> None:
        self.delta = Delta()
        self.now_bucket = bucket_of(now)
        self.oldest_bucket = oldest_bucket
        self.error_status_min = error_status_min
        self.threshold_s = threshold_s
        self.malformed = 0
        self.names: dict[bytes, str | None] = {}
        # endpoint name (undecoded) -> its requests' columns: timestamps, seconds, statuses
        self.api_gathered: dict[bytes, tuple[array[float], array[float], array[int]]] = {}
        self.block_folders: dict[str, Callable[..., None]] = {
            API: self.api,
            PAYMENT: self.payment,
            **{
                kind: _bound(self.named_events, name_of, fold_event)
                for kind, (name_of, fold_event) in _EVENT_FOLDERS.items()
            },
        }

    def name(self, raw: bytes) -> str | None:
        name = self.names.get(raw, "")
        if name == "":
            name = self.names[raw] = _name_of(raw)
        return name

    def bucket(self, ts: float) -> int:
        return min(int(ts // BUCKET_S), self.now_bucket)

    def api(
        self,
        names: Sequence[bytes],
        counts: Runs,
        ts: Sequence[float],
        rts: Sequence[float],
        sts: Sequence[int],
    ) -> None:
        """API requests: a block's runs are gathered per endpoint, and ``finish`` folds each
        endpoint's requests of the whole call at once (a few long columns instead of many short
        runs: the per-event work is done by C-level passes)."""
        gathered = self.api_gathered
        at = 0
        for name_b, n in zip(names, counts, strict=True):
            if n:
                end = at + n
                columns = gathered.get(name_b)
                if columns is None:
                    columns = gathered[name_b] = (array("d"), array("d"), array("H"))
                columns[0].extend(ts[at:end])
                columns[1].extend(rts[at:end])
                columns[2].extend(sts[at:end])
                at = end

    def _api_endpoint(
        self, endpoint: str, ts: Sequence[float], rts: Sequence[float], sts: Sequence[int]
    ) -> None:
        """One endpoint's requests: checked over whole columns (a bad value is skipped and
        counted, the rest kept), put in time order if they are not (then the first and last
        timestamps are the extremes), cut into minute buckets by binary search and folded a
        bucket at a time."""
        if not ts:
            return
        if not (math.isfinite(sum(ts)) and math.isfinite(sum(rts))):
            self._api_endpoint(endpoint, *self._valid_requests(ts, rts, sts))
            return
        if not all(map(le, ts, islice(ts, 1, None))):
            order = sorted(range(len(ts)), key=ts.__getitem__)
            ts, rts, sts = (
                array("d", map(ts.__getitem__, order)),
                array("d", map(rts.__getitem__, order)),
                array("H", map(sts.__getitem__, order)),
            )
        rt_min, rt_max, st_max = min(rts), max(rts), max(sts)
        if not (
            ts[0] > 0.0
            and ts[-1] < 1e11
            and rt_min >= 0.0
            and rt_max <= MAX_RESPONSE_TIME_S
            and min(sts) >= 100
            and st_max <= 599
        ):
            self._api_endpoint(endpoint, *self._valid_requests(ts, rts, sts))
            return
        hints = (st_max >= self.error_status_min, rt_max > self.threshold_s, rt_min < MIN_VALUE_S)
        n, at, now_bucket = len(ts), 0, self.now_bucket
        if ts[0] < self.oldest_bucket * BUCKET_S:
            at = bisect_left(ts, self.oldest_bucket * BUCKET_S)
            self.delta.count(now_bucket, "too_old", at)
        while at < n:
            bucket = int(ts[at] // BUCKET_S)
            if bucket >= now_bucket:  # the rest, stamped in this minute or the future
                bucket, end = now_bucket, n
            else:
                # at least ts[at] itself, whose bucket this is (so the loop always advances)
                end = max(bisect_left(ts, (bucket + 1) * BUCKET_S, at), at + 1)
            self._api_bucket(bucket, endpoint, rts[at:end], sts[at:end], hints)
            at = end

    def _valid_requests(
        self, ts: Sequence[float], rts: Sequence[float], sts: Sequence[int]
    ) -> tuple[array[float], array[float], array[int]]:
        """The requests whose every value is in range (in their order); the others are counted
        as malformed."""
        ok = [
            0.0 < t < 1e11 and 0.0 <= rt <= MAX_RESPONSE_TIME_S and 100 <= st <= 599
            for t, rt, st in zip(ts, rts, sts, strict=True)
        ]
        self.malformed += ok.count(False)
        return (
            array("d", compress(ts, ok)),
            array("d", compress(rts, ok)),
            array("H", compress(sts, ok)),
        )

    def _api_bucket(
        self,
        bucket: int,
        endpoint: str,
        rts: Sequence[float],
        sts: Sequence[int],
        hints: tuple[bool, bool, bool],
    ) -> None:
        """Requests of one endpoint in one bucket; ``hints`` say whether the endpoint's columns
        hold an error, a response over the threshold, a response under the sketch's smallest
        bin."""
        n = len(rts)
        acc = self.delta.api.get((bucket, endpoint))
        if acc is None:
            acc = self.delta.api[bucket, endpoint] = ApiAcc()
        maybe_error, maybe_slow, maybe_zero = hints
        acc.count += n
        if maybe_error:
            acc.errors += sum(map(self.error_status_min.__le__, sts))
        acc.sum_s += sum(rts)
        acc.at_or_below += sum(map(self.threshold_s.__ge__, rts)) if maybe_slow else n
        if maybe_zero:
            _count_into(acc.bins, map(bin_of, rts))
        else:
            _count_into(acc.bins, map(math.ceil, map(INV_LOG_GAMMA.__mul__, map(math.log, rts))))

    def payment(
        self, names: Sequence[bytes], counts: Runs, ts: Sequence[float], amounts: Sequence[float]
    ) -> None:
        """Payment failures (few): event by event."""
        at = 0
        for name_b, n in zip(names, counts, strict=True):
            reason = self.name(name_b)
            for i in range(at, at + n):
                t, amount = ts[i], amounts[i]
                if reason is None or not (0.0 <= amount <= MAX_AMOUNT and 0.0 < t < 1e11):
                    self.malformed += 1
                    continue
                bucket = self.bucket(t)
                if bucket < self.oldest_bucket:
                    self.delta.count(self.now_bucket, "too_old")
                    continue
                pay = self.delta.pay.get((bucket, reason))
                if pay is None:
                    pay = self.delta.pay[bucket, reason] = PayAcc()
                pay.count += 1
                pay.amount += amount
            at += n

    def named_events(
        self,
        name_of: Callable[[bytes], Any],
        fold_event: Callable[..., None],
        names: Sequence[bytes],
        counts: Runs,
        ts: Sequence[float],
        *columns: Sequence[Any],
    ) -> None:
        """The kinds beyond requests and payments, event by event: ``name_of`` decodes a
        run's name once (None: malformed), ``fold_event`` checks and folds one event."""
        at = 0
        for name_b, n in zip(names, counts, strict=True):
            name, end = name_of(name_b), at + n
            for i in range(at, end):
                t = ts[i]
                if name is None or not 0.0 < t < 1e11:
                    self.malformed += 1
                    continue
                bucket = self.bucket(t)
                if bucket < self.oldest_bucket:
                    self.delta.count(self.now_bucket, "too_old")
                    continue
                try:
                    fold_event(self.delta, bucket, name, *(column[i] for column in columns))
                except ValueError:
                    self.malformed += 1
            at = end

    def overflow(self, count: int) -> None:
        if not 0 <= count <= MAX_OVERFLOW_COUNT:
            raise ValueError("overflow count out of range")
        self.delta.count(self.now_bucket, "overflow", count)

    def lines(self, lines: list[bytes]) -> None:
        """The previous version's text lines, parsed into runs and folded as above."""
        runs: dict[bytes, dict[bytes, list[tuple[float, float, int]]]] = {b"a": {}, b"p": {}}
        for line in lines:
            try:
                kind = line[:2]
                if kind == b"a|":
                    _, ts_b, rt_b, st_b, name_b = line.split(b"|", 4)
                    status = int(st_b)
                    event = (float(ts_b), float(rt_b), status if 0 <= status <= 0xFFFF else 0)
                elif kind == b"p|":
                    _, ts_b, amount_b, name_b = line.split(b"|", 3)
                    event = (float(ts_b), float(amount_b), 0)
                elif kind == b"o|":
                    _, _ts_b, n_b = line.split(b"|", 2)
                    self.overflow(int(n_b))
                    continue
                else:
                    raise ValueError("unknown kind")
            except (ValueError, TypeError, OverflowError):
                self.malformed += 1
                continue
            runs[kind[:1]].setdefault(name_b, []).append(event)
        for kind, fold_block in ((b"a", self.api), (b"p", self.payment)):
            if runs[kind]:
                names = [_unescaped(name_b) for name_b in runs[kind]]
                counts = [len(events) for events in runs[kind].values()]
                columns = list(zip(*chain.from_iterable(runs[kind].values()), strict=True))
                fold_block(names, counts, *(columns if kind == b"a" else columns[:2]))

    def finish(self) -> Delta:
        delta = self.delta
        for name_b, (ts, rts, sts) in self.api_gathered.items():
            endpoint = self.name(name_b)
            if endpoint is None:
                self.malformed += len(ts)
            else:
                self._api_endpoint(endpoint, ts, rts, sts)
        self.api_gathered.clear()
        delta.events += sum(acc.count for acc in delta.api.values())
        delta.events += sum(pay.count for pay in delta.pay.values())
        if self.malformed:
            delta.count(self.now_bucket, "malformed", self.malformed)
            log.warning("skipped %d malformed raw entries", self.malformed)
        return delta


_ESCAPE = re.compile(rb"\\(.)", re.S)


def _unescape(match: re.Match[bytes]) -> bytes:
    return b"\n" if match.group(1) == b"n" else match.group(1)


def _unescaped(raw: bytes) -> bytes:
    """A name of the previous version's text lines, its escapes undone."""
    return _ESCAPE.sub(_unescape, raw) if b"\\" in raw else raw


def _name_of(raw: bytes) -> str | None:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not name or len(name) > 200:
        return None
    return name


def _bound(method: Callable[..., None], *first: Any) -> Callable[..., None]:
    def bound(*rest: Any) -> None:
        method(*first, *rest)

    return bound


def _in_range(value: float, limit: float) -> float:
    """``value`` when it is within 0..limit (NaN is not), else ValueError."""
    if not 0.0 <= value <= limit:
        raise ValueError("out of range")
    return value


def _task_of(raw: bytes) -> tuple[str, str] | None:
    """(task, queue) of a task attempt's run name (``events.task_name``); None: not one."""
    try:
        task, queue = split_task_name(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not 0 < len(task) <= 200 or len(queue) > 200:
        return None
    return task, queue


def _fold_task(
    delta: Delta, bucket: int, name: tuple[str, str], outcome: int, runtime: float, wait: float
) -> None:
    if outcome not in (0, 1, 2):
        raise ValueError("bad outcome")
    for value in (runtime, wait):
        if not math.isnan(value):
            _in_range(value, MAX_RESPONSE_TIME_S)
    task, queue = name
    stats = delta.section(bucket, TASKS, task)
    per_queue = delta.section(bucket, TASK_QUEUES, queue) if queue else {}
    if queue:
        stats["tq"] = queue
        delta.events -= 1  # one event, in two sections
    if outcome == 2:
        stats["ty"] = stats.get("ty", 0) + 1
    else:
        stats["tr"] = stats.get("tr", 0) + 1
        per_queue["ur"] = per_queue.get("ur", 0) + 1
        if outcome == 1:
            stats["tf"] = stats.get("tf", 0) + 1
        if not math.isnan(runtime):
            _add_value(stats, "tt", "th", runtime)
    if not math.isnan(wait):
        _observe(stats, "tw", "tx", "tb", wait)
        if queue:
            _observe(per_queue, "uw", "ux", "ub", wait)


def _fold_query(delta: Delta, bucket: int, alias: str, duration: float, ok: int) -> None:
    _in_range(duration, MAX_RESPONSE_TIME_S)
    if ok not in (0, 1):
        raise ValueError("bad ok")
    stats = delta.section(bucket, DB, alias)
    _add_value(stats, "ds", "dh", duration)
    if not ok:
        stats["de"] = stats.get("de", 0) + 1


def _fold_cache(delta: Delta, bucket: int, alias: str, lookups: int, hits: int) -> None:
    if not 0 <= hits <= lookups <= MAX_COUNT:
        raise ValueError("out of range")
    if lookups:  # a call that looked up no key counts nothing
        stats = delta.section(bucket, CACHE, alias)
        stats[CACHE] += lookups - 1  # the head counts keys looked up, not calls
        stats["kh"] = stats.get("kh", 0) + hits


def _fold_value(delta: Delta, bucket: int, name: str, value: float) -> None:
    _add_value(delta.section(bucket, VALUES, name), "vs", "vh", _in_range(value, MAX_METRIC_VALUE))


def _fold_ratio(delta: Delta, bucket: int, name: str, ok: int) -> None:
    if ok not in (0, 1):
        raise ValueError("bad ok")
    stats = delta.section(bucket, RATIOS, name)
    stats["ro"] = stats.get("ro", 0) + ok


def _fold_queries(delta: Delta, bucket: int, endpoint: str, queries: int) -> None:
    if not 0 <= queries <= MAX_COUNT:
        raise ValueError("out of range")
    stats = delta.section(bucket, QUERIES, endpoint)
    delta.events -= 1  # part of its request, not an event of its own
    _add_value(stats, "qs", "qh", queries)


# kind -> (decoder of a run's raw name, folder of one event of it)
_EVENT_FOLDERS: dict[str, tuple[Callable[[bytes], Any], Callable[..., None]]] = {
    TASK: (_task_of, _fold_task),
    QUERY: (_name_of, _fold_query),
    CACHE_KIND: (_name_of, _fold_cache),
    VALUE: (_name_of, _fold_value),
    RATIO: (_name_of, _fold_ratio),
    QUERIES_KIND: (_name_of, _fold_queries),
}


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
