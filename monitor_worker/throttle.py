"""Alert state in Redis: atomic claims, the delivery outbox with leases, silences, pacing.

Every key lives under ``Keys(prefix, shards).alerts_base`` (``P{alerts}:``), so each script
touches one Cluster slot, and every key has a TTL::

    P{alerts}:state:<alert key>  hash    firing, since, episode, last_value, sent_at,
                                         hold_until, delivered_episode, resolved_at
    P{alerts}:firing             zset    alert key -> firing since
    P{alerts}:outbox             zset    entry id -> when it may next be sent (a lease pushes it on)
    P{alerts}:entries            hash    entry id ("firing:<key>" | "resolved:<key>") -> JSON
    P{alerts}:silences           hash    pattern -> JSON {pattern, reason, until, created}
    P{alerts}:pace               string  the Slack rate slot (SET NX PX)
    P{alerts}:deliveries         list    the newest delivery outcomes (JSON), newest first
    P{alerts}:delivery_totals    hash    outcome -> deliveries ever; _:last_error -> JSON

An *episode* is one stretch of firing; a "resolved" message is owed for an episode only once a
"firing" message of that same episode was answered 2xx. A claim is refused while anything for
the key waits in the outbox, and until ``hold_until`` (last delivery + throttle, or a notified
resolve + throttle), so at most one firing message per key per throttle period is delivered.

Usage::

    claim(client, settings, "payment_failures", notice, value=12, now=now)  # [b"claimed", b"1"]
    for entry in lease_due(client, settings, now, lease_until=now + 60):
        ...  # send, then finish(...) or reschedule(...)
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import redis

from .config import Settings
from .keys import Keys
from .slack import Notice

Client = Any  # redis.Redis, its Pipeline, or redis.cluster.RedisCluster

# Claim an outbox slot for a firing alert. Guarantees: the episode starts once; at most one
# entry per key in the outbox; nothing is claimed before hold_until or while silenced.
CLAIM = """
local key, now = ARGV[1], tonumber(ARGV[2])
local episode = tonumber(redis.call('HGET', KEYS[1], 'episode') or '0')
if redis.call('HGET', KEYS[1], 'firing') ~= '1' then
  episode = redis.call('HINCRBY', KEYS[1], 'episode', 1)
  redis.call('HSET', KEYS[1], 'firing', '1', 'since', ARGV[2])
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], key)
redis.call('HSET', KEYS[1], 'last_value', ARGV[3], 'last_seen', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if ARGV[4] == '1' then return {'silenced', '0'} end
if redis.call('HEXISTS', KEYS[3], 'firing:' .. key) == 1
   or redis.call('HEXISTS', KEYS[3], 'resolved:' .. key) == 1 then
  return {'pending', '0'}
end
local hold = tonumber(redis.call('HGET', KEYS[1], 'hold_until') or '0')
if now < hold then return {'throttled', tostring(hold)} end
local entry = cjson.decode(ARGV[5])
entry['episode'] = episode
entry['since'] = tonumber(redis.call('HGET', KEYS[1], 'since') or ARGV[2])
redis.call('HSET', KEYS[3], 'firing:' .. key, cjson.encode(entry))
redis.call('ZADD', KEYS[4], ARGV[2], 'firing:' .. key)
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[6])
return {'claimed', tostring(episode)}
"""

# End an episode. A resolved message is queued only when this episode's firing message was
# delivered or still waits in the outbox (it then goes out after it, or is dropped with it).
RESOLVE = """
local key, now = ARGV[1], tonumber(ARGV[2])
redis.call('ZREM', KEYS[2], key)
if redis.call('HGET', KEYS[1], 'firing') ~= '1' then return 'not_firing' end
redis.call('HSET', KEYS[1], 'firing', '0', 'resolved_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[6])
local episode = redis.call('HGET', KEYS[1], 'episode') or '0'
local notified = redis.call('HGET', KEYS[1], 'delivered_episode') == episode
local pending = redis.call('HGET', KEYS[3], 'firing:' .. key)
if pending and cjson.decode(pending)['episode'] == tonumber(episode) then notified = true end
if not notified then return 'undelivered' end
local hold = tonumber(redis.call('HGET', KEYS[1], 'hold_until') or '0')
redis.call('HSET', KEYS[1], 'hold_until', tostring(math.max(hold, now + tonumber(ARGV[4]))))
if ARGV[3] ~= '1' then return 'quiet' end
local entry = cjson.decode(ARGV[5])
entry['episode'] = tonumber(episode)
redis.call('HSET', KEYS[3], 'resolved:' .. key, cjson.encode(entry))
redis.call('ZADD', KEYS[4], ARGV[2], 'resolved:' .. key)
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[6])
return 'queued'
"""

# Lease every due entry (its score moves to the lease end; a crashed sender's entries become
# due again then). A resolved entry waits until its firing entry has left the outbox.
LEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out, later = {}, {}
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[2], id)
  if not data then
    redis.call('ZREM', KEYS[1], id)
  elseif string.sub(id, 1, 9) == 'resolved:' then
    table.insert(later, id)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, data)
  end
end
for _, id in ipairs(later) do
  local score = redis.call('ZSCORE', KEYS[1], 'firing:' .. string.sub(id, 10))
  if score then
    redis.call('ZADD', KEYS[1], tonumber(score) + 0.001, id)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, redis.call('HGET', KEYS[2], id))
  end
end
return out
"""

# Finish an entry if it is still the one we sent (same cid): delivered (records the episode as
# notified and the throttle hold) or dropped. Either way a waiting resolved entry is due now.
FINISH = """
local data = redis.call('HGET', KEYS[2], ARGV[1])
if not data then return 0 end
local entry = cjson.decode(data)
if entry['cid'] ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if entry['kind'] == 'firing' then
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[3], 'sent_at', ARGV[3], 'hold_until', ARGV[5],
                'delivered_episode', tostring(entry['episode']))
  elseif ARGV[5] ~= '' then
    redis.call('HSET', KEYS[3], 'hold_until', ARGV[5])
  end
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  local resolved = 'resolved:' .. entry['key']
  if redis.call('ZSCORE', KEYS[1], resolved) then redis.call('ZADD', KEYS[1], ARGV[3], resolved) end
end
return 1
"""

# Put an entry back (a retry, or a lease given up) if it is still the one we hold.
RESCHEDULE = """
local data = redis.call('HGET', KEYS[2], ARGV[1])
if not data or cjson.decode(data)['cid'] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# Record one delivery outcome: the newest ARGV[3] records (newest first), a counter per
# outcome and the last Slack error, in one step so the list and the counters agree.
# KEYS: deliveries list, delivery totals hash. ARGV: record JSON, outcome, kept, n, error
# JSON ('' = none), ttl.
RECORD_DELIVERY = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], '_:last_error', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
"""

# Add a silence; the hash lives as long as its longest silence.
SILENCE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
"""


@dataclass(frozen=True)
class AlertKeys:
    base: str

    @classmethod
    def of(cls, settings: Settings) -> AlertKeys:
        return cls(Keys(settings.key_prefix, settings.shards).alerts_base)

    def state(self, key: str) -> str:
        return f"{self.base}state:{key}"

    @property
    def firing(self) -> str:
        return self.base + "firing"

    @property
    def outbox(self) -> str:
        return self.base + "outbox"

    @property
    def entries(self) -> str:
        return self.base + "entries"

    @property
    def silences(self) -> str:
        return self.base + "silences"

    @property
    def pace(self) -> str:
        return self.base + "pace"

    @property
    def deliveries(self) -> str:
        return self.base + "deliveries"

    @property
    def delivery_totals(self) -> str:
        return self.base + "delivery_totals"


@dataclass(frozen=True)
class Entry:
    """One message owed to Slack for one alert key."""

    key: str
    kind: str  # "firing" | "resolved"
    notice: Notice
    cid: str
    created: float
    episode: int = 0
    since: float = 0.0
    attempts: int = 0

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.key}"

    def dumps(self) -> str:
        n = self.notice
        notice = {"status": n.status, "title": n.title, "details": n.details, "note": n.note}
        data = {k: getattr(self, k) for k in ("key", "kind", "cid", "created", "attempts")}
        return json.dumps({**data, "episode": self.episode, "since": self.since, "notice": notice})

    @classmethod
    def loads(cls, raw: bytes | str) -> Entry:
        data = json.loads(raw)
        n = data["notice"]
        details = tuple((str(a), str(b)) for a, b in n.get("details") or ())
        notice = Notice(data["key"], n["status"], n["title"], details, n.get("note") or "")
        return cls(
            key=data["key"],
            kind=data["kind"],
            notice=notice,
            cid=data["cid"],
            created=float(data["created"]),
            episode=int(data.get("episode") or 0),
            since=float(data.get("since") or 0.0),
            attempts=int(data.get("attempts") or 0),
        )


class Batch:
    """Script calls sent together: on one pipeline (plain Redis), or one by one on a Redis
    Cluster, whose pipelines cannot load scripts. ``replies()`` gives a reply or the
    RedisError of each call, in order.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._pipe = client.pipeline(transaction=False) if isinstance(client, redis.Redis) else None
        self._direct: list[Any] = []
        self.size = 0

    def run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """``call(client, *args, **kwargs)`` on the pipeline, or now."""
        self.size += 1
        if self._pipe is not None:
            call(self._pipe, *args, **kwargs)
            return
        try:
            self._direct.append(call(self._client, *args, **kwargs))
        except redis.RedisError as exc:  # this call failed; the others stand
            self._direct.append(exc)

    def replies(self) -> list[Any]:
        if self._pipe is None or not self.size:
            return self._direct
        return list(self._pipe.execute(raise_on_error=False))


def state_ttl_s(settings: Settings) -> int:
    """Alert state outlives the throttle, the delivery age and the window, twice over."""
    longest = max(settings.alert_throttle_s, settings.delivery_max_age_s, settings.window_s)
    return int(2 * longest) + 3600


def new_entry(key: str, kind: str, notice: Notice, now: float) -> Entry:
    return Entry(key=key, kind=kind, notice=notice, cid=uuid.uuid4().hex, created=now)


def claim(
    client: Client,
    settings: Settings,
    key: str,
    notice: Notice,
    *,
    value: float | None,
    now: float,
    silenced: bool = False,
) -> Any:
    """Mark ``key`` firing and claim a delivery; reply ``[status, detail]`` (on a pipeline later).

    status: "claimed" (detail: episode), "throttled" (detail: hold_until), "pending" (a message
    for the key waits in the outbox) or "silenced".
    """
    ak = AlertKeys.of(settings)
    entry = new_entry(key, "firing", notice, now).dumps()
    args = [key, now, "" if value is None else value, int(silenced), entry, state_ttl_s(settings)]
    keys = [ak.state(key), ak.firing, ak.entries, ak.outbox]
    return _script(client, CLAIM)(keys=keys, args=args, client=client)


def resolve(
    client: Client, settings: Settings, key: str, notice: Notice, *, now: float, notify: bool
) -> Any:
    """End the episode of ``key``; reply "queued", "quiet", "undelivered" or "not_firing"."""
    ak = AlertKeys.of(settings)
    entry = new_entry(key, "resolved", notice, now).dumps()
    args = [key, now, int(notify), settings.alert_throttle_s, entry, state_ttl_s(settings)]
    keys = [ak.state(key), ak.firing, ak.entries, ak.outbox]
    return _script(client, RESOLVE)(keys=keys, args=args, client=client)


def firing_keys(client: redis.Redis, settings: Settings) -> dict[str, float]:
    """The alert keys firing now -> firing since."""
    rows = client.zrange(AlertKeys.of(settings).firing, 0, -1, withscores=True)
    return {
        as_text(member): float(score) for member, score in cast(list[tuple[bytes, float]], rows)
    }


def lease_due(
    client: redis.Redis, settings: Settings, now: float, *, lease_until: float, limit: int = 10_000
) -> list[Entry]:
    """Lease the entries due at ``now`` until ``lease_until``; finish or reschedule each."""
    ak = AlertKeys.of(settings)
    rows = _script(client, LEASE)(keys=[ak.outbox, ak.entries], args=[now, lease_until, limit])
    return [Entry.loads(raw) for raw in rows]


def finish(
    client: Client,
    settings: Settings,
    entry: Entry,
    *,
    now: float,
    delivered: bool,
    hold_until: float | None = None,
) -> Any:
    """Remove a delivered or dropped entry; a delivered firing entry starts the throttle hold."""
    ak = AlertKeys.of(settings)
    if delivered and hold_until is None:
        hold_until = now + settings.alert_throttle_s
    args = [entry.id, entry.cid, now, int(delivered), "" if hold_until is None else hold_until]
    keys = [ak.outbox, ak.entries, ak.state(entry.key)]
    return _script(client, FINISH)(keys=keys, args=[*args, state_ttl_s(settings)], client=client)


def reschedule(client: Client, settings: Settings, entry: Entry, *, due: float) -> Any:
    """Make ``entry`` (with its new attempt count) due again at ``due``."""
    ak = AlertKeys.of(settings)
    args = [entry.id, entry.cid, due, entry.dumps()]
    return _script(client, RESCHEDULE)(keys=[ak.outbox, ak.entries], args=args, client=client)


def touch(client: Client, settings: Settings, key: str) -> Any:
    """Keep the state of a firing ``key`` alive while it cannot be evaluated."""
    return client.expire(AlertKeys.of(settings).state(key), state_ttl_s(settings))


def next_due(client: redis.Redis, settings: Settings) -> float | None:
    rows = cast(
        list[tuple[bytes, float]],
        client.zrange(AlertKeys.of(settings).outbox, 0, 0, withscores=True),
    )
    return float(rows[0][1]) if rows else None


def outbox_size(client: redis.Redis, settings: Settings) -> int:
    return int(client.zcard(AlertKeys.of(settings).outbox))


def states(client: redis.Redis, settings: Settings, keys: list[str]) -> list[dict[str, str]]:
    ak = AlertKeys.of(settings)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(ak.state(key))
    return [{as_text(k): as_text(v) for k, v in row.items()} for row in pipe.execute()]


def take_pace_slot(client: redis.Redis, settings: Settings, *, pace_s: float) -> float:
    """Take the shared send slot: 0.0 when taken, else the seconds until it frees up."""
    key = AlertKeys.of(settings).pace
    if client.set(key, "1", nx=True, px=max(1, round(pace_s * 1000))):
        return 0.0
    left_ms = int(client.pttl(key))
    return max(left_ms, 10) / 1000


def hold_pace(client: redis.Redis, settings: Settings, *, seconds: float) -> None:
    """Keep every sender off the webhook for ``seconds`` (Slack asked us to wait)."""
    key, ms = AlertKeys.of(settings).pace, max(1, math.ceil(seconds * 1000))
    if not client.set(key, "1", nx=True, px=ms):
        client.pexpire(key, ms, gt=True)


# ---- delivery records ---------------------------------------------------------------------

DELIVERY_OUTCOMES = ("sent", "retrying", "dropped")
DELIVERIES_KEPT = 100
DELIVERY_RECORD_TTL_S = 30 * 24 * 3600


def record_delivery(
    client: Client, settings: Settings, entry: Entry, outcome: str, *, now: float, error: str = ""
) -> Any:
    """Record what became of one outbox entry: ``sent``, ``retrying`` or ``dropped`` (with
    Slack's error string or the reason, when there is one)."""
    if outcome not in DELIVERY_OUTCOMES:
        raise ValueError(f"outcome: one of {', '.join(DELIVERY_OUTCOMES)} (got {outcome!r})")
    ak = AlertKeys.of(settings)
    record = {
        "t": now,
        "key": entry.key,
        "kind": entry.kind,
        "outcome": outcome,
        "error": error or None,
        "attempts": entry.attempts,
    }
    last_error = json.dumps({"t": now, "key": entry.key, "error": error}) if error else ""
    args = [json.dumps(record), outcome, DELIVERIES_KEPT, 1, last_error, DELIVERY_RECORD_TTL_S]
    keys = [ak.deliveries, ak.delivery_totals]
    return _script(client, RECORD_DELIVERY)(keys=keys, args=args, client=client)


def delivery_history(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """``{"recent": [newest first], "totals": {outcome: n}, "last_error": {t, key, error}}``
    (``last_error`` None when Slack never failed)."""
    ak = AlertKeys.of(settings)
    pipe = client.pipeline(transaction=False)
    pipe.lrange(ak.deliveries, 0, DELIVERIES_KEPT - 1)
    pipe.hgetall(ak.delivery_totals)
    recent, totals = pipe.execute()
    fields = {as_text(k): as_text(v) for k, v in totals.items()}
    last_error = fields.pop("_:last_error", None)
    return {
        "recent": [json.loads(r) for r in recent],
        "totals": {o: int(fields.get(o, 0)) for o in DELIVERY_OUTCOMES},
        "last_error": json.loads(last_error) if last_error else None,
    }


def oldest_undelivered(client: redis.Redis, settings: Settings) -> dict[str, Any] | None:
    """The oldest entry waiting in the outbox: ``{key, kind, created, attempts}``, or None."""
    rows = client.hvals(AlertKeys.of(settings).entries)
    entries = [Entry.loads(r) for r in rows]
    if not entries:
        return None
    e = min(entries, key=lambda e: e.created)
    return {"key": e.key, "kind": e.kind, "created": e.created, "attempts": e.attempts}


# ---- silences -------------------------------------------------------------------------------

SILENCE_TEXT_MAX = 500  # characters of a silence's pattern and of its reason
MAX_SILENCE_S = 365 * 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``"30s"``, ``"15m"``, ``"2h"`` or ``"1d"`` (a bare number is seconds)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else 0.0
    if not 0 < seconds <= MAX_SILENCE_S:
        shown = text[:60] if isinstance(text, str) else text
        raise ValueError(
            "duration: expected a number and a unit s, m, h or d (30s, 15m, 2h, 1d; at most "
            f"365d), got {shown!r}"
        )
    return seconds


def silence_matches(pattern: str, key: str) -> bool:
    """``pattern`` is an exact alert key or a prefix ending in ``*``."""
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern


def add_silence(
    client: redis.Redis,
    settings: Settings,
    pattern: str,
    duration_s: float,
    reason: str = "",
    now: float | None = None,
    *,
    created_by: str = "",
) -> dict[str, Any]:
    """Silence ``pattern`` for ``duration_s`` seconds from ``now``; returns the silence.

    ``created_by`` says who made it (``cli``, a web token's name, or ``local``)."""
    pattern = pattern.strip() if isinstance(pattern, str) else ""
    if not pattern or "*" in pattern[:-1] or len(pattern) > SILENCE_TEXT_MAX:
        raise ValueError(
            f"pattern: an alert key or a prefix ending in '*', at most {SILENCE_TEXT_MAX} "
            f"characters (got {pattern[:60]!r})"
        )
    if not (isinstance(duration_s, int | float) and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s: must be a number of seconds > 0 (got {duration_s!r})")
    if not isinstance(reason, str) or len(reason) > SILENCE_TEXT_MAX:
        raise ValueError(f"reason: text of at most {SILENCE_TEXT_MAX} characters")
    now = _now(now)
    silence = {
        "pattern": pattern,
        "reason": reason,
        "until": now + duration_s,
        "created": now,
        "created_by": created_by,
    }
    ms = math.ceil(duration_s * 1000)
    keys = [AlertKeys.of(settings).silences]
    _script(client, SILENCE)(keys=keys, args=[pattern, json.dumps(silence), ms])
    return silence


def list_silences(
    client: redis.Redis, settings: Settings, now: float | None = None
) -> list[dict[str, Any]]:
    """The silences in force at ``now``, by pattern; ended ones are removed."""
    key, now = AlertKeys.of(settings).silences, _now(now)
    active: list[dict[str, Any]] = []
    ended: list[dict[str, Any]] = []
    for raw in client.hgetall(key).values():
        silence = json.loads(raw)
        (active if float(silence["until"]) > now else ended).append(silence)
    if ended:
        client.hdel(key, *[s["pattern"] for s in ended])
    return sorted(active, key=lambda s: str(s["pattern"]))


def remove_silence(client: redis.Redis, settings: Settings, pattern: str) -> bool:
    """End the silence on exactly ``pattern``; False when there was none."""
    return bool(client.hdel(AlertKeys.of(settings).silences, pattern.strip()))


def silence_for(silences: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The first silence covering ``key``, or None."""
    return next((s for s in silences if silence_matches(str(s["pattern"]), key)), None)


def with_attempt(entry: Entry) -> Entry:
    return replace(entry, attempts=entry.attempts + 1)


def _script(client: Client, source: str) -> Any:
    """The script object; called with ``client=`` a pipeline, it is queued there."""
    return client.register_script(source)


def as_text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _now(now: float | None) -> float:
    return time.time() if now is None else now
