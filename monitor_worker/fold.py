"""Folding raw-list entries into per-bucket deltas: the aggregator's per-event work.

Each chunk's blocks are decoded (``events.chunk_blocks``, ``events.decode_runs``) and handed to
one small method per kind. API requests, the bulk of the events, are gathered per endpoint over
the whole call and folded with C-level passes over their columns (checks, time order, minute
buckets by binary search, sums and the sketch's bin counts); the other kinds are folded event
by event. A bad value is skipped and counted as malformed, never the rest of its block.
"""

from __future__ import annotations

import collections
import logging
import math
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
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
from .windows import (
    CACHE,
    DB,
    INV_LOG_GAMMA,
    MIN_VALUE_S,
    QUERIES,
    RATIOS,
    TASK_QUEUES,
    TASKS,
    VALUES,
    ApiAcc,
    Delta,
    PayAcc,
    Stats,
    bin_of,
    bucket_of,
)

log = logging.getLogger("monitor_worker.fold")

# Counter.update's C helper: adds one per element to a plain dict. (Bins stay plain dicts: a
# Counter is 2-3x slower to index, and windows index bins everywhere.)
_count_into: Callable[[dict[int, int], Iterable[int]], None] = collections._count_elements  # type: ignore[attr-defined]

MAX_OVERFLOW_COUNT = 2**40


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
            PAYMENT: _bound(self.named_events, self.name, _fold_payment),
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
        return min(bucket_of(ts), self.now_bucket)

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
            bucket = bucket_of(ts[at])
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

    def named_events(
        self,
        name_of: Callable[[bytes], Any],
        fold_event: Callable[..., None],
        names: Sequence[bytes],
        counts: Runs,
        ts: Sequence[float],
        *columns: Sequence[Any],
    ) -> None:
        """The kinds beyond requests, event by event: ``name_of`` decodes a run's name once
        (None: malformed), ``fold_event`` checks and folds one event."""
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
        for kind, fold_block in ((b"a", self.api), (b"p", self.block_folders[PAYMENT])):
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


def _fold_payment(delta: Delta, bucket: int, reason: str, amount: float) -> None:
    if not 0.0 <= amount <= MAX_AMOUNT:
        raise ValueError("amount out of range")
    pay = delta.pay.get((bucket, reason))
    if pay is None:
        pay = delta.pay[bucket, reason] = PayAcc()
    pay.count += 1
    pay.amount += amount


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
