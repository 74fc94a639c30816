"""Redis I/O of the metrics pipeline: connecting, pushing raw events, draining them into
buckets exactly once, and reading a window.

Exactly once: an aggregator claims a batch of raw events into a leased batch list (CLAIM),
folds it in Python, and applies the result with APPLY, which deletes the batch in the same
atomic step. A worker killed before APPLY leaves the batch leased; once the lease runs out
another aggregator takes it over (RECLAIM) and applies it. A batch already applied is gone,
so applying it again (a retried command, a second aggregator) counts nothing.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from . import scripts
from .config import Settings, redact_url
from .events import element_count
from .fold import fold
from .keys import (
    LEASE_MS,
    PUSH_DEDUPE_TTL_S,
    RAW_TTL_S,
    TOTALS_TTL_S,
    Keys,
    ShardKeys,
    bucket_ttl_s,
)
from .windows import (
    CACHE,
    DB,
    FIELD_TYPES,
    QUERIES,
    RATIOS,
    TASK_QUEUES,
    TASKS,
    VALUES,
    ApiAcc,
    Delta,
    Window,
    bucket_of,
    cap_names,
    cap_sections,
    format_bins,
    window_start,
)

log = logging.getLogger("monitor_worker.store")

Client = Any  # redis.Redis or redis.RedisCluster: both speak the commands used here

# A cluster client reports an unreachable cluster (at connect and on any command) as
# RedisClusterException, which is not a RedisError.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException, OSError)


def connect(
    settings: Settings,
    *,
    socket_timeout_s: float = 5.0,
    connect_timeout_s: float = 2.0,
    retries: bool = True,
) -> Client:
    """A client for the metrics store (Redis, Valkey, or a Redis Cluster when configured).

    The scripts used here are idempotent, so redis-py's retry on connection errors is safe;
    the tracking path turns retries off to keep an outage cheap for the app.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "health_check_interval": 30,
    }
    if not retries:
        kwargs["retry"] = Retry(NoBackoff(), 0)
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(settings.redis_url, **kwargs)
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def describe_error(settings: Settings, exc: BaseException) -> str:
    """A one-line reason that never shows a password."""
    text = str(exc).replace(settings.redis_url, redact_url(settings.redis_url))
    what = "refused a command" if isinstance(exc, redis.ResponseError) else "unreachable"
    return f"metrics store {redact_url(settings.redis_url)} {what}: {text}"


class Scripts:
    """The registered Lua scripts for one client (redis-py reloads them after a restart)."""

    def __init__(self, client: Client) -> None:
        self.push = client.register_script(scripts.PUSH)
        self.claim = client.register_script(scripts.CLAIM)
        self.reclaim = client.register_script(scripts.RECLAIM)
        self.admit = client.register_script(scripts.ADMIT)
        self.apply = client.register_script(scripts.APPLY)
        self.read_shard = client.register_script(scripts.READ_SHARD)
        self.read_minutes = client.register_script(scripts.READ_MINUTES)

    @classmethod
    def of(cls, client: Client) -> Scripts:
        """The scripts registered for ``client`` (made once per client)."""
        found: Scripts | None = _SCRIPTS.get(client)
        if found is None:
            found = _SCRIPTS[client] = cls(client)
        return found


_SCRIPTS: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()


def push_batches(
    client: Client,
    scr: Scripts,
    settings: Settings,
    batches: Sequence[tuple[int, str, int, bytes]],
) -> None:
    """Push (shard, push id, event count, chunk) batches in one pipeline; raises on a fault.

    A batch pushed again with the same id (after an unknown outcome) is not added twice.
    """
    keys = Keys(settings.key_prefix, settings.shards)
    calls = []
    for shard, push_id, count, chunk in batches:
        sk = keys.shard(shard)
        calls.append(
            (
                [sk.raw, sk.push(push_id), sk.stats],
                [settings.raw_max, PUSH_DEDUPE_TTL_S, RAW_TTL_S, count, chunk],
            )
        )
    if settings.redis_cluster:
        _push_cluster(client, scr.push, calls)
        return
    pipe = client.pipeline(transaction=False)
    for call_keys, args in calls:
        scr.push(keys=call_keys, args=args, client=pipe)
    pipe.execute()


def _push_cluster(client: Client, script: Any, calls: list[tuple[list[str], list[Any]]]) -> None:
    """PUSH calls on a Redis Cluster: one pipelined round trip per master.

    A cluster pipeline refuses Script objects (it cannot load a script where it routes one), so
    EVALSHA is queued as a plain command, routed by the shard keys and following MOVED/ASK.
    A master without the script (new, restarted, failed over) answers NOSCRIPT and ran
    nothing: the script is loaded on every master and those calls are sent again.
    """
    pending = calls
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for call_keys, args in pending:
            pipe.execute_command("EVALSHA", script.sha, len(call_keys), *call_keys, *args)
        replies = pipe.execute(raise_on_error=False)
        missing = []
        for call, reply in zip(pending, replies, strict=True):
            if isinstance(reply, NoScriptError) and attempt == 0:
                missing.append(call)
            elif isinstance(reply, Exception):
                raise reply
        if not missing:
            return
        client.script_load(script.script)
        pending = missing


@dataclass
class DrainResult:
    events: int = 0
    batches: int = 0
    reclaimed: int = 0
    held: str | None = None  # the batch claimed and left unapplied (``stop_after_claim``)


# section -> (admitted-names group, the Settings field of its cap); requests' query counts
# share the endpoints' group
_CAPS = {
    TASKS: ("tasks", "max_tasks"),
    TASK_QUEUES: ("task_queues", "max_aliases"),
    DB: ("db", "max_aliases"),
    CACHE: ("cache", "max_aliases"),
    VALUES: ("metrics", "max_metrics"),
    RATIOS: ("metrics", "max_metrics"),
    QUERIES: ("endpoints", "max_endpoints"),
}


def _names_by_group(delta: Delta) -> dict[str, set[str]]:
    """The names of the delta per capped group (endpoints: of requests and query counts)."""
    groups: dict[str, set[str]] = {"endpoints": {ep for _, ep in delta.api}}
    for _, head, name in delta.stats:
        groups.setdefault(_CAPS[head][0], set()).add(name)
    return groups


def _cap_all(
    delta: Delta, refused: dict[str, set[str]], refused_reasons: set[str], now: float
) -> None:
    """Fold every name a cap refused (``refused``: group -> names) into ``__other__``."""
    cap_names(delta, refused.get("endpoints", set()), refused_reasons, now)
    cap_sections(delta, {h: refused.get(g, set()) for h, (g, _) in _CAPS.items()}, now)


def _stat_value(kind: str, value: Any) -> Any:
    t = FIELD_TYPES[kind]
    return format_bins(value) if t == "h" else repr(value) if t == "f" else value


def _acc_fields(acc: ApiAcc, bins: str) -> list[Any]:
    """An endpoint's statistics as APPLY reads them: count, errors, sum, at-or-below, bins."""
    return [acc.count, acc.errors, repr(acc.sum_s), acc.at_or_below, bins]


def _records(delta: Delta, start: int) -> list[Any]:
    """APPLY's arguments: record counts, the totals' TTL, per-bucket records, the api records
    of buckets from ``start`` on summed per endpoint (the roll merges each endpoint's bins once
    per batch), the other kinds' records, then each endpoint's requests and errors (the
    totals)."""
    api: list[Any] = []
    summed: dict[str, ApiAcc] = {}
    totals: dict[str, list[int]] = {}
    for (bucket, endpoint), acc in delta.api.items():
        api += [bucket, endpoint, *_acc_fields(acc, format_bins(acc.bins))]
        counts = totals.get(endpoint)
        if counts is None:
            totals[endpoint] = [acc.count, acc.errors]
        else:
            counts[0] += acc.count
            counts[1] += acc.errors
        if bucket >= start:
            total = summed.get(endpoint)
            if total is None:
                summed[endpoint] = total = ApiAcc()
            total.merge(acc)
    pay: list[Any] = []
    for (bucket, reason), p in delta.pay.items():
        pay += [bucket, reason, p.count, repr(p.amount)]
    counters: list[Any] = []
    for (bucket, name), n in delta.counters.items():
        counters += [bucket, name, n]
    roll: list[Any] = []
    for endpoint, total in summed.items():
        roll += [endpoint, *_acc_fields(total, format_bins(total.bins))]
    sections: list[Any] = []
    for (bucket, _, name), stats in delta.stats.items():
        for kind, value in stats.items():
            sections += [bucket, f"{kind}:{name}", FIELD_TYPES[kind], _stat_value(kind, value)]
    per_endpoint = [v for endpoint, (n, errors) in totals.items() for v in (endpoint, n, errors)]
    return [
        *(len(delta.api), len(delta.pay), len(delta.counters), len(summed), TOTALS_TTL_S),
        *(*api, *pay, *counters, *roll),
        *(len(sections) // 4, *sections, len(totals), *per_endpoint),
    ]


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a batch is folded: the fold makes many small
    objects and no reference cycles, so collections during it only cost time (about a tenth of
    the drain's CPU). Restored after, unless it was already paused."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Aggregator:
    """Drains the raw lists of some shards into buckets; safe to run in many processes."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix, settings.shards)
        self.scripts = Scripts.of(client)
        self._admitted: dict[str, set[str]] = {}  # group -> names known admitted
        self._admitted_reasons: set[str] = set()

    def drain(
        self,
        shards: Sequence[int] | None = None,
        *,
        now: float | None = None,
        budget_s: float | None = None,
        stop_after_claim: bool = False,
    ) -> DrainResult:
        """Drain the given shards (default: all) until empty or the time budget is spent.

        ``stop_after_claim`` (tests only) claims one batch and returns without applying it,
        as a worker killed between the two steps would; ``held`` names that batch.
        """
        result = DrainResult()
        started = time.monotonic()
        if shards is not None and any(not 0 <= s < self.settings.shards for s in shards):
            raise ValueError(f"shards must be in 0-{self.settings.shards - 1} (got {shards!r})")
        order = iter(range(self.settings.shards) if shards is None else shards)
        sk: ShardKeys | None = None
        claimed_any = False

        def next_claim() -> tuple[ShardKeys, float, str, list[bytes], bool] | None:
            """The next batch, shard after shard (a shard that had none has its window moved);
            None when every shard is empty or the time budget is spent."""
            nonlocal sk, claimed_any
            while True:
                if sk is None:
                    shard = next(order, None)
                    if shard is None:
                        return None
                    sk, claimed_any = self.keys.shard(shard), False
                if budget_s is None or time.monotonic() - started < budget_s:
                    at = time.time() if now is None else now
                    batch_id, entries, reclaimed = self._claim(sk)
                    if batch_id is not None:
                        claimed_any = True
                        return sk, at, batch_id, entries, reclaimed
                if not claimed_any:
                    self._apply(sk, "", [], time.time() if now is None else now)
                sk = None

        def apply_then_claim(call: dict[str, list[Any]] | None) -> Any:
            if call is not None:
                self.scripts.apply(**call)
            return next_claim()

        # A pipeline over two threads: while this one folds a batch, the other has Redis apply
        # the previous batch and claim the next, so Redis and Python work at the same time.
        # One APPLY at a time, in claim order; an error raised before anything else is sent.
        applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-apply")
        try:
            claimed, call = next_claim(), None
            while claimed is not None:
                at_sk, at, batch_id, entries, reclaimed = claimed
                if stop_after_claim:
                    result.held = batch_id
                    return result
                job = applier.submit(apply_then_claim, call)
                with _cycle_collector_paused():
                    call = self._apply_call(at_sk, batch_id, entries, at)
                claimed = job.result()
                result.events += sum(element_count(e) for e in entries)
                result.batches += 1
                result.reclaimed += int(reclaimed)
            if call is not None:
                self.scripts.apply(**call)
        finally:
            applier.shutdown(wait=True)
        return result

    def _claim(self, sk: ShardKeys) -> tuple[str | None, list[bytes], bool]:
        now_ms = int(time.time() * 1000)
        expired = self.scripts.reclaim(keys=[sk.leases], args=[now_ms, now_ms + LEASE_MS])
        if expired:
            batch_id = expired.decode() if isinstance(expired, bytes) else str(expired)
            entries = self.client.lrange(sk.batch(batch_id), 0, -1)
            if entries:
                return batch_id, entries, True
            self.client.zrem(sk.leases, batch_id)
        batch_id = uuid.uuid4().hex
        entries = self.scripts.claim(
            keys=[sk.raw, sk.leases, sk.batch(batch_id), sk.stats, sk.batch_counts],
            args=[self.settings.aggregate_batch, now_ms + LEASE_MS, batch_id, RAW_TTL_S],
        )
        if not entries:
            return None, [], False
        return batch_id, entries, False

    def fold(self, entries: Sequence[bytes], now: float) -> Delta:
        s = self.settings
        delta = fold(
            entries,
            now=now,
            error_status_min=s.error_status_min,
            threshold_s=s.api_response_threshold,
            oldest_bucket=bucket_of(now) - bucket_ttl_s(s.window_s) // 60 + 1,
        )
        caps = {group: getattr(s, field) for group, field in _CAPS.values()}
        refused = {
            group: self._admit(
                names,
                self._admitted.setdefault(group, set()),
                self.keys.admitted(group),
                caps[group],
            )
            for group, names in _names_by_group(delta).items()
        }
        refused_reasons = self._admit(
            {r for _, r in delta.pay}, self._admitted_reasons, self.keys.reasons, s.max_reasons
        )
        _cap_all(delta, refused, refused_reasons, now)
        return delta

    def _admit(self, names: set[str], known: set[str], key: str, cap: int) -> set[str]:
        new = sorted(n for n in names if n not in known and n != "__other__")
        if not new:
            return set()
        ttl = bucket_ttl_s(self.settings.window_s)
        answers = self.scripts.admit(keys=[key], args=[cap, ttl, *new])
        refused = set()
        for name, ok in zip(new, answers, strict=True):
            if int(ok):
                known.add(name)
            else:
                refused.add(name)
        return refused

    def _apply(self, sk: ShardKeys, batch_id: str, entries: Sequence[bytes], now: float) -> int:
        """Fold ``entries`` and apply them as batch ``batch_id`` ('' = only move the window):
        1, or 0 when that batch was applied already."""
        return int(self.scripts.apply(**self._apply_call(sk, batch_id, entries, now)))

    def _apply_call(
        self, sk: ShardKeys, batch_id: str, entries: Sequence[bytes], now: float
    ) -> dict[str, list[Any]]:
        """The APPLY script's keys and arguments for a batch (its entries folded)."""
        s = self.settings
        delta = self.fold(entries, now) if entries else Delta()
        start = window_start(now, s.window_s)
        return {
            "keys": [
                sk.batch(batch_id) if batch_id else sk.raw,
                sk.leases,
                sk.roll,
                sk.stats,
                sk.batch_counts,
                sk.totals,
            ],
            "args": [
                sk.base,
                batch_id,
                start,
                bucket_of(now),
                s.window_buckets,
                bucket_ttl_s(s.window_s),
                *_records(delta, start),
            ],
        }


@dataclass
class WindowRead:
    window: Window
    pending_events: int
    pending_unread: int  # pending events over the read budget: counted, not in the window
    admitted_endpoints: int


_FAST_PATH_MAX_LAG = 5  # buckets the roll may trail the wanted window by
# Raw events a summary folds in on the fly, over all shards; a larger backlog is counted
# (pending_events, pending_unread) but only its newest events are included, so a stalled
# aggregation cannot make reads slow. Alerts do not resolve on such a partial window.
PENDING_READ_MAX = 200_000


def read_window(client: Client, settings: Settings, now: float) -> WindowRead:
    """The window ending at ``now``, merged over shards, including raw events not yet
    aggregated. Each shard is read by one script, so a concurrent aggregation is seen whole."""
    keys = Keys(settings.key_prefix, settings.shards)
    start = window_start(now, settings.window_s)
    end = bucket_of(now)
    real_bucket = bucket_of(time.time())
    window = Window()
    pending: list[bytes] = []
    unread = 0
    budget = PENDING_READ_MAX  # events left to fold in, over all shards
    read_shard = Scripts.of(client).read_shard
    trimmed = 0
    for sk in keys.all_shards():
        fast, hashes, claimed, raw, queued, shard_trimmed = read_shard(
            keys=[sk.roll, sk.leases, sk.raw, sk.stats],
            args=[sk.base, start, end, real_bucket, _FAST_PATH_MAX_LAG, max(budget, 0)],
        )
        for n, flat in enumerate(hashes):
            fields = dict(zip(flat[0::2], flat[1::2], strict=True))
            window.add_fields(fields, -1 if fast and n else 1)
        read = sum(element_count(e) for e in raw)
        budget -= read
        unread += max(0, int(queued) - read)  # counted, not folded in
        trimmed += int(shard_trimmed)
        pending += claimed
        pending += raw
    if end >= real_bucket and trimmed:  # trimmed now, counted in a bucket by the next APPLY
        window.counters["trimmed"] = window.counters.get("trimmed", 0) + trimmed
    admitted = _admitted(client, keys)
    delta = _pending_delta(client, keys, pending, settings, now, start, admitted)
    if delta is not None:
        window.add_delta(delta, start, end)
    pending_total = unread + sum(element_count(e) for e in pending)
    return WindowRead(window, pending_total, unread, len(admitted["endpoints"]))


@dataclass
class MinutesRead:
    """The minute buckets of a window: ``versions[(shard, bucket)]`` is each bucket's version
    (``""``: none), ``hashes`` the buckets that changed since the versions the caller gave
    (field -> value, as stored), and ``pending`` the raw events not aggregated yet, folded."""

    start: int
    end: int
    versions: dict[tuple[int, int], str]
    hashes: dict[tuple[int, int], dict[bytes, bytes]]
    pending: Delta | None


def read_minutes(
    client: Client,
    settings: Settings,
    now: float,
    known: Mapping[tuple[int, int], str] | None = None,
) -> MinutesRead:
    """The minute buckets of the window ending at ``now`` that changed since the ``known``
    versions ((shard, bucket) -> version), with the raw events not aggregated yet (the newest
    ``PENDING_READ_MAX`` of them). Each shard is read by one script, atomically."""
    keys = Keys(settings.key_prefix, settings.shards)
    start, end = window_start(now, settings.window_s), bucket_of(now)
    known = known or {}
    versions: dict[tuple[int, int], str] = {}
    hashes: dict[tuple[int, int], dict[bytes, bytes]] = {}
    pending: list[bytes] = []
    budget = PENDING_READ_MAX
    read = Scripts.of(client).read_minutes
    for sk in keys.all_shards():
        held = [known.get((sk.shard, b), "") for b in range(start, end + 1)]
        shard_versions, shard_hashes, claimed, raw = read(
            keys=[sk.leases, sk.raw], args=[sk.base, start, end, max(budget, 0), *held]
        )
        buckets = range(start, end + 1)
        for bucket, version, flat in zip(buckets, shard_versions, shard_hashes, strict=True):
            versions[sk.shard, bucket] = version.decode() if isinstance(version, bytes) else ""
            if flat is not None:
                hashes[sk.shard, bucket] = dict(zip(flat[0::2], flat[1::2], strict=True))
        budget -= sum(element_count(e) for e in raw)
        pending += claimed
        pending += raw
    delta = _pending_delta(client, keys, pending, settings, now, start)
    return MinutesRead(start, end, versions, hashes, delta)


def read_totals(client: Client, settings: Settings) -> dict[str, dict[str, int]]:
    """Every request, error and payment failure aggregated so far (monotonic counters):
    ``{"requests": {endpoint: n}, "errors": {endpoint: n}, "payment_failures": {reason: n}}``."""
    keys = Keys(settings.key_prefix, settings.shards)
    pipe = client.pipeline(transaction=False)
    for sk in keys.all_shards():
        pipe.hgetall(sk.totals)
    out: dict[str, dict[str, int]] = {"requests": {}, "errors": {}, "payment_failures": {}}
    section = {b"c": out["requests"], b"e": out["errors"], b"pc": out["payment_failures"]}
    for fields in pipe.execute():
        for raw_key, raw_value in fields.items():
            kind, _, name = raw_key.partition(b":")
            target = section.get(kind)
            if target is not None and name:
                text = name.decode("utf-8", "replace")
                target[text] = target.get(text, 0) + int(raw_value)
    return out


def _admitted(client: Client, keys: Keys) -> dict[str, set[str]]:
    """The admitted names of every capped group (endpoints, tasks, metrics, ...)."""
    groups = sorted({group for group, _ in _CAPS.values()})
    pipe = client.pipeline(transaction=False)
    for group in groups:
        pipe.smembers(keys.admitted(group))
    return {
        group: {m.decode() for m in names}
        for group, names in zip(groups, pipe.execute(), strict=True)
    }


def _refused(names: set[str], admitted: set[str], cap: int) -> set[str]:
    """The names a cap would refuse, admitting new ones in order while there is room."""
    room = max(0, cap - len(admitted))
    refused = set()
    for name in sorted(names - admitted - {"__other__"}):
        if room > 0:
            room -= 1
        else:
            refused.add(name)
    return refused


def _pending_delta(
    client: Client,
    keys: Keys,
    entries: list[bytes],
    settings: Settings,
    now: float,
    start: int,
    admitted: dict[str, set[str]] | None = None,
) -> Delta | None:
    """Raw events not aggregated yet, folded as an aggregator would (caps included);
    ``admitted``: the names each capped group admitted (read here when not given)."""
    if not entries:
        return None
    if admitted is None:
        admitted = _admitted(client, keys)
    reasons = {m.decode() for m in client.smembers(keys.reasons)}
    # Clamp future stamps to the real clock, not to a past ``now``, so that events after a
    # past window's end stay outside it.
    fold_now = max(now, time.time())
    delta = fold(
        entries,
        now=fold_now,
        error_status_min=settings.error_status_min,
        threshold_s=settings.api_response_threshold,
        oldest_bucket=start,
    )
    caps = {group: getattr(settings, field) for group, field in _CAPS.values()}
    refused = {
        group: _refused(names, admitted[group], caps[group])
        for group, names in _names_by_group(delta).items()
    }
    _cap_all(
        delta, refused, _refused({r for _, r in delta.pay}, reasons, settings.max_reasons), fold_now
    )
    delta.counters.pop((bucket_of(fold_now), "too_old"), None)
    return delta


def record_heartbeat(client: Client, settings: Settings, who: str, now: float) -> None:
    client.set(Keys(settings.key_prefix, settings.shards).heartbeat(who), repr(now), ex=86400)


def read_heartbeats(client: Client, settings: Settings) -> dict[str, float | None]:
    keys = Keys(settings.key_prefix, settings.shards)
    names = ("worker", "beat")
    values = client.mget([keys.heartbeat(n) for n in names])
    return {n: (float(v) if v is not None else None) for n, v in zip(names, values, strict=True)}


def pending_count(client: Client, settings: Settings) -> int:
    """Raw events not yet aggregated (queued in raw lists plus claimed batches)."""
    keys = Keys(settings.key_prefix, settings.shards)
    pipe = client.pipeline(transaction=False)
    for sk in keys.all_shards():
        pipe.hget(sk.stats, "queued")
        pipe.hvals(sk.batch_counts)
    got = pipe.execute()
    queued = sum(int(v or 0) for v in got[0::2])
    claimed = sum(int(v) for values in got[1::2] for v in values)
    return queued + claimed
