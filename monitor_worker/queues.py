"""Broker queue lengths through kombu, and backlog trends.

Both brokers count the messages waiting in a queue. Messages already reserved or prefetched
by workers are not in it (on Redis they sit in kombu's ``unacked`` hash).

Usage::

    lengths = inspect_queues("redis://127.0.0.1:6379/0", ["celery"], transport_options={})
    lengths["celery"].length            # every priority list of the queue, summed

    check_queues(client, settings, now=time.time())   # inspect and record a sample
    queue_report(client, settings, now=time.time())   # lengths, growth, drain ETA
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp.exceptions
import redis
from kombu import Connection
from kombu.exceptions import KombuError
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import Settings, redact_url
from .errors import QueueInspectionError
from .keys import Keys

SAMPLES_MAX = 64  # samples kept per queue
SAMPLES_TTL_S = 24 * 3600  # samples and broker status vanish a day after the last check
GROWTH_WINDOW_S = 300.0  # the slope is fitted over the 5 minutes up to the newest sample
ERROR_MAX_CHARS = 500

# Failures of the broker or its client libraries; anything else is a bug and propagates.
_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    KombuError,
    OSError,
    redis.RedisError,
    amqp.exceptions.AMQPError,
)


@dataclass(frozen=True)
class QueueLength:
    """Messages waiting in one queue; ``priorities`` maps priority step -> count (Redis only)."""

    name: str
    length: int
    exists: bool
    priorities: dict[str, int]


def inspect_queues(
    broker_url: str,
    queues: Sequence[str],
    *,
    transport_options: Mapping[str, Any] | None = None,
    timeout_s: float = 5.0,
) -> dict[str, QueueLength]:
    """Count the messages waiting in ``queues``, creating none of them.

    Redis (``redis://``, ``rediss://``, ``sentinel://``): every priority list of a queue, named
    by kombu's own channel from ``transport_options`` (``global_keyprefix``, ``priority_steps``,
    ``sep``), read with one pipelined round trip. On Redis an empty queue has no key, so
    ``exists`` is False whenever ``length`` is 0. AMQP: a passive ``queue_declare`` per queue.

    One connection attempt, each network step bounded by ``timeout_s``; any broker failure
    raises QueueInspectionError with the password left out.
    """
    names = list(dict.fromkeys(queues))
    if not names:
        return {}
    try:
        conn = Connection(
            broker_url,
            connect_timeout=timeout_s,
            transport_options=_transport_options(broker_url, transport_options, timeout_s),
        )
        driver = conn.transport.driver_type
    except (KeyError, ValueError, ImportError) as exc:
        raise _failure(broker_url, "unsupported broker URL", exc) from None
    try:
        conn.ensure_connection(max_retries=0)  # one attempt, no kombu retry loop
        if driver == "redis":
            return _redis_lengths(conn, names)
        if driver == "amqp":
            return _amqp_lengths(conn, names)
        raise QueueInspectionError(
            f"cannot inspect queues on {redact_url(broker_url)}: the {driver} transport "
            "is not supported (use a Redis or AMQP broker)"
        )
    except _BROKER_ERRORS as exc:
        raise _failure(broker_url, "cannot inspect queues", exc) from None
    finally:
        conn.release()


def _transport_options(
    url: str, options: Mapping[str, Any] | None, timeout_s: float
) -> dict[str, Any]:
    opts = dict(options or {})
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme in ("redis", "rediss", "sentinel"):
        opts.update(socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        opts["retry_on_timeout"] = False
        if scheme == "sentinel":
            sentinel = dict(opts.get("sentinel_kwargs") or {})
            sentinel.update(socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
            sentinel["retry"] = Retry(NoBackoff(), 0)  # redis-py would back off for seconds
            opts["sentinel_kwargs"] = sentinel
    else:
        opts.update(read_timeout=timeout_s, write_timeout=timeout_s)
    return opts


def _redis_lengths(conn: Connection, names: list[str]) -> dict[str, QueueLength]:
    channel: Any = conn.default_channel  # kombu.transport.redis.Channel
    # (queue, priority label, key) in pipeline order; the channel names the keys exactly as
    # it does when publishing, and its client adds global_keyprefix.
    plan = [
        (name, str(step), channel._q_for_pri(name, step))
        for name in names
        for step in channel.priority_steps
    ]
    with channel.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
        for _, _, key in plan:
            pipe.llen(key)
        replies = pipe.execute(raise_on_error=False)
    breakdown: dict[str, dict[str, int]] = {name: {} for name in names}
    seen: set[tuple[str, str]] = set()
    for (name, label, key), reply in zip(plan, replies, strict=True):
        if (name, key) in seen:  # a repeated priority step names the same list twice
            continue
        seen.add((name, key))
        # like kombu's own size: a key that is not a list holds no messages
        count = reply if isinstance(reply, int) else 0
        breakdown[name][label] = breakdown[name].get(label, 0) + count
    result = {}
    for name, priorities in breakdown.items():
        total = sum(priorities.values())
        result[name] = QueueLength(name, total, total > 0, priorities)
    return result


def _amqp_lengths(conn: Connection, names: list[str]) -> dict[str, QueueLength]:
    result = {}
    for name in names:
        # "not found" closes the channel it happened on, so each queue gets a fresh one
        channel: Any = conn.channel()
        try:
            _, count, _ = channel.queue_declare(queue=name, passive=True)
        except amqp.exceptions.NotFound:
            result[name] = QueueLength(name, 0, False, {})
        else:
            result[name] = QueueLength(name, int(count), True, {})
        finally:
            conn.maybe_close_channel(channel)
    return result


def _failure(url: str, what: str, exc: BaseException) -> QueueInspectionError:
    detail = str(exc) or type(exc).__name__
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")}:
        if secret:
            detail = detail.replace(secret, "***")
    return QueueInspectionError(
        f"{what} on {redact_url(url)}: {type(exc).__name__}: {detail}"[:ERROR_MAX_CHARS]
    )


# -- trend maths (pure) -------------------------------------------------------------------


def growth_per_minute(samples: Sequence[tuple[float, int]]) -> float | None:
    """Least-squares slope, in messages per minute, of the samples (timestamp_s, length) taken
    in the 5 minutes up to the newest one; None with fewer than 2 samples there."""
    if not samples:
        return None
    newest = max(ts for ts, _ in samples)
    recent = [(ts, n) for ts, n in samples if ts >= newest - GROWTH_WINDOW_S]
    if len(recent) < 2:
        return None
    mean_t = sum(ts for ts, _ in recent) / len(recent)
    mean_n = sum(n for _, n in recent) / len(recent)
    spread = sum((ts - mean_t) ** 2 for ts, _ in recent)
    if spread == 0:
        return None
    slope_per_s = sum((ts - mean_t) * (n - mean_n) for ts, n in recent) / spread
    return slope_per_s * 60.0


def drain_eta_seconds(length: int, growth_per_minute: float | None) -> float | None:
    """Seconds until the queue is empty at the current rate; None unless it is shrinking."""
    if growth_per_minute is None or not growth_per_minute < 0 or length < 0:
        return None
    return length / (-growth_per_minute / 60.0)


def is_growing(samples: Sequence[tuple[float, int]], checks: int, minimum: int) -> bool:
    """True when the last ``checks + 1`` samples strictly increase and the newest > minimum."""
    ordered = sorted(samples)
    if checks < 1 or len(ordered) < checks + 1:
        return False
    last = [n for _, n in ordered[-(checks + 1) :]]
    rising = all(a < b for a, b in pairwise(last))
    return rising and last[-1] > minimum


# -- samples and broker status in Redis ----------------------------------------------------


def check_queues(
    client: redis.Redis, settings: Settings, now: float, *, timeout_s: float = 5.0
) -> dict[str, QueueLength] | None:
    """Inspect the configured queues and record the outcome; None when the broker failed."""
    try:
        lengths = inspect_queues(
            settings.inspected_broker_url,
            settings.queues,
            transport_options=settings.queues_broker_transport_options,
            timeout_s=timeout_s,
        )
    except QueueInspectionError as exc:
        record_unreachable(client, settings, str(exc), now)
        return None
    record_samples(client, settings, lengths, now)
    return lengths


def record_samples(
    client: redis.Redis,
    settings: Settings,
    lengths: Mapping[str, QueueLength],
    now: float,
    *,
    mark_reachable: bool = True,
) -> None:
    """Append one sample per queue (newest SAMPLES_MAX kept) and mark the broker reachable.

    ``mark_reachable=False`` for lengths measured elsewhere (not by a broker check here).
    """
    keys = Keys(settings.key_prefix, settings.shards)
    # One MULTI (every key carries the {queues} tag): a reader never sees a sample without
    # the status of the check that took it.
    with client.pipeline(transaction=True) as pipe:
        for q in lengths.values():
            key = keys.queue_samples(q.name)
            member = {"t": now, "n": q.length, "e": int(q.exists), "p": q.priorities}
            pipe.zadd(key, {json.dumps(member, sort_keys=True, separators=(",", ":")): now})
            pipe.zremrangebyrank(key, 0, -(SAMPLES_MAX + 1))
            pipe.expire(key, SAMPLES_TTL_S)
        if mark_reachable:
            status = keys.queue_status
            pipe.hset(status, mapping={**_status_fields(settings, "1", "", now), "failures": "0"})
            pipe.hdel(status, "since")
            pipe.expire(status, SAMPLES_TTL_S)
        pipe.execute()


def record_unreachable(client: redis.Redis, settings: Settings, error: str, now: float) -> None:
    """Mark the broker unreachable: counts consecutive failures and keeps the first one's time."""
    status = Keys(settings.key_prefix, settings.shards).queue_status
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(status, mapping=_status_fields(settings, "0", error[:ERROR_MAX_CHARS], now))
        pipe.hincrby(status, "failures", 1)
        pipe.hsetnx(status, "since", repr(now))
        pipe.expire(status, SAMPLES_TTL_S)
        pipe.execute()


def _status_fields(settings: Settings, reachable: str, error: str, now: float) -> dict[Any, str]:
    return {
        "reachable": reachable,
        "error": error,
        "checked_at": repr(now),
        "broker": redact_url(settings.inspected_broker_url),
    }


def broker_status(client: redis.Redis, settings: Settings) -> dict[str, Any] | None:
    """The last check's broker status, or None before any check.

    ``{'reachable', 'error', 'checked_at', 'broker', 'failures', 'since'}``: ``failures``
    counts consecutive failed checks and ``since`` is the first of them (None when reachable).
    """
    raw = client.hgetall(Keys(settings.key_prefix, settings.shards).queue_status)
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    since = fields.get("since")
    return {
        "reachable": fields.get("reachable") == "1",
        "error": fields.get("error") or None,
        "checked_at": float(fields.get("checked_at", "0")),
        "broker": fields.get("broker", ""),
        "failures": int(fields.get("failures", "0")),
        "since": float(since) if since else None,
    }


# Admit a queue measured by a job (check_celery_queue) under the MONITOR_MAX_QUEUES cap.
# KEYS: measured zset (name -> last sample time). ARGV: name, now, cap, forget before, ttl.
# Returns 1 (admitted, time noted) or 0 (refused). Guarantees: names whose samples have
# expired are forgotten first, and the set never holds more than cap names.
ADMIT_MEASURED = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


def admit_measured(client: redis.Redis, settings: Settings, name: str, now: float) -> bool:
    """Note ``name`` as a measured queue; False when ``MONITOR_MAX_QUEUES`` are already kept."""
    key = Keys(settings.key_prefix, settings.shards).measured_queues
    args: list[str | float] = [name, now, settings.max_queues, now - SAMPLES_TTL_S, SAMPLES_TTL_S]
    return bool(client.register_script(ADMIT_MEASURED)(keys=[key], args=args))


def queue_names(client: redis.Redis, settings: Settings, now: float) -> list[str]:
    """The configured queues, then the queues measured by jobs whose samples are still kept."""
    key = Keys(settings.key_prefix, settings.shards).measured_queues
    measured: list[bytes] = client.zrangebyscore(key, now - SAMPLES_TTL_S, "+inf")  # type: ignore[assignment]
    return list(dict.fromkeys([*settings.queues, *(_text(m) for m in measured)]))


def queue_report(client: redis.Redis, settings: Settings, now: float) -> dict[str, Any]:
    """The queues that have samples (configured, or measured by a job): latest length,
    growth and drain estimate.

    ``{queue: {'length', 'exists', 'checked_at', 'age_s', 'growth_per_minute',
    'drain_eta_seconds', 'growing', 'priorities'}}``; see broker_status for the broker.
    """
    keys = Keys(settings.key_prefix, settings.shards)
    names = queue_names(client, settings, now)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zrange(keys.queue_samples(name), 0, -1)
        replies = pipe.execute()
    report: dict[str, Any] = {}
    for name, members in zip(names, replies, strict=True):
        samples = sorted((_sample(m) for m in members), key=lambda s: float(s["t"]))
        if not samples:
            continue
        latest = samples[-1]
        series = [(float(s["t"]), int(s["n"])) for s in samples]
        growth = growth_per_minute(series)
        report[name] = {
            "length": int(latest["n"]),
            "exists": bool(latest["e"]),
            "checked_at": float(latest["t"]),
            "age_s": now - float(latest["t"]),
            "growth_per_minute": growth,
            "drain_eta_seconds": drain_eta_seconds(int(latest["n"]), growth),
            "growing": is_growing(series, settings.queue_growth_checks, settings.queue_growth_min),
            "priorities": dict(latest.get("p") or {}),
        }
    return report


def _sample(member: bytes | str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(member)  # written by record_samples only
    return value


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def queues_json(lengths: Mapping[str, QueueLength], broker_url: str, now: float) -> dict[str, Any]:
    """The ``monitor-worker queues --json`` document (the broker URL without its password)."""
    broker = redact_url(broker_url)
    out: dict[str, Any] = {}
    for name, q in lengths.items():
        entry: dict[str, Any] = {"length": q.length, "exists": q.exists}
        if q.priorities:
            entry["priorities"] = dict(q.priorities)
        entry["checked_at"] = now
        entry["broker"] = broker
        out[name] = entry
    return out
