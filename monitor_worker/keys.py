"""Every Redis key name and TTL, built in one place.

Layout (``P`` is ``MONITOR_KEY_PREFIX``, ``s`` a shard number). Every key of a shard carries
the Redis Cluster hash tag ``{s<n>}`` so one Lua script or MULTI touches one slot only::

    P{s3}:raw                 list   raw event chunks, LPUSHed by apps (oldest at the right)
    P{s3}:leases              zset   claimed batch id -> lease deadline (ms)
    P{s3}:bcount              hash   claimed batch id -> events in it
    P{s3}:batch:<id>          list   events claimed by an aggregator, until applied
    P{s3}:push:<id>           string de-duplicates a retried push of one flush batch
    P{s3}:m:<minute>          hash   one minute bucket of the shard's endpoints and reasons
    P{s3}:roll                hash   the same fields summed over the current window
    P{s3}:stats               hash   events queued in raw; trimmed events not yet in a bucket
    P{s3}:totals              hash   requests, errors, payment failures ever applied (counters)
    P{s3}:dirty               hash   minute -> writes to its bucket since the archive read it
    P{meta}:endpoints         set    admitted endpoints (cardinality cap)
    P{meta}:reasons           set    admitted payment-failure reasons
    P{meta}:tasks ...         set    admitted task names, task queues, db and cache aliases,
                                     custom metrics (``Keys.admitted``)
    P{alerts}:...             alert state, outbox, silences (see throttle.py)
    P{queues}:...             queue samples, queues measured by jobs (see queues.py)
    P{meta}:heartbeat:<who>   string last time a worker/beat was seen

History in Redis (history/redis_store.py), one hash tag per source shard ``{h<n>}``; ``k``
is a kind's letter, ``t`` the start (unix s) of the period; every field is a name::

    P{h3}:m:<k>:<hour t>      hash   the minute rows of that hour (packed, history/rollup.py)
    P{h3}:mb:<k>:<minute t>   hash   a minute's sketch bins, while its bucket may still change
    P{h3}:h:<k>:<hour t>      hash   hour rows, with their bins
    P{h3}:d:<k>:<day t>       hash   day rows, with their bins
    P{hmeta}:gaps             zset   minutes lost before they were archived ("t0:t1" by t0)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Raw lists, batches and stats outlive any worker outage worth recovering from.
RAW_TTL_S = 7 * 24 * 3600
PUSH_DEDUPE_TTL_S = 600  # longer than any retry of one flush batch
LEASE_MS = 60_000
TOTALS_TTL_S = 30 * 24 * 3600  # counters of a name not seen for 30 days are forgotten


def shard_of(name: str, shards: int) -> int:
    """Stable shard of an endpoint or reason (the same in every process and host)."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) % shards


@dataclass(frozen=True)
class ShardKeys:
    prefix: str
    shard: int

    @property
    def base(self) -> str:
        return f"{self.prefix}{{s{self.shard}}}:"

    @property
    def raw(self) -> str:
        return self.base + "raw"

    @property
    def leases(self) -> str:
        return self.base + "leases"

    @property
    def roll(self) -> str:
        return self.base + "roll"

    @property
    def stats(self) -> str:
        return self.base + "stats"

    @property
    def totals(self) -> str:
        return self.base + "totals"

    @property
    def batch_counts(self) -> str:
        return self.base + "bcount"

    def batch(self, batch_id: str) -> str:
        return f"{self.base}batch:{batch_id}"

    def push(self, push_id: str) -> str:
        return f"{self.base}push:{push_id}"

    def minute(self, minute: int) -> str:
        return f"{self.base}m:{minute}"

    @property
    def dirty(self) -> str:
        return self.base + "dirty"


@dataclass(frozen=True)
class HistoryKeys:
    """History keys of one source shard (``level`` is m, mb, h or d; see the layout above)."""

    prefix: str
    src: int

    @property
    def base(self) -> str:
        return f"{self.prefix}{{h{self.src}}}:"

    def rows(self, level: str, kind: str, t: int) -> str:
        return f"{self.base}{level}:{kind}:{t}"


@dataclass(frozen=True)
class Keys:
    """Key names for one deployment (one ``MONITOR_KEY_PREFIX``)."""

    prefix: str
    shards: int

    def shard(self, shard: int) -> ShardKeys:
        return ShardKeys(self.prefix, shard)

    def all_shards(self) -> list[ShardKeys]:
        return [ShardKeys(self.prefix, s) for s in range(self.shards)]

    @property
    def endpoints(self) -> str:
        return f"{self.prefix}{{meta}}:endpoints"

    @property
    def reasons(self) -> str:
        return f"{self.prefix}{{meta}}:reasons"

    def admitted(self, group: str) -> str:
        """The admitted names of one capped group (``tasks``, ``metrics``, ...)."""
        return f"{self.prefix}{{meta}}:{group}"

    def history(self, src: int) -> HistoryKeys:
        return HistoryKeys(self.prefix, src)

    @property
    def history_gaps(self) -> str:
        return f"{self.prefix}{{hmeta}}:gaps"

    def heartbeat(self, who: str) -> str:
        return f"{self.prefix}{{meta}}:heartbeat:{who}"

    # alert state (throttle.py); all share the {alerts} tag so one script sees them all
    @property
    def alerts_base(self) -> str:
        return f"{self.prefix}{{alerts}}:"

    # queue samples (queues.py)
    def queue_samples(self, queue: str) -> str:
        return f"{self.prefix}{{queues}}:samples:{queue}"

    @property
    def queue_status(self) -> str:
        return f"{self.prefix}{{queues}}:status"

    @property
    def measured_queues(self) -> str:
        """Queues measured by jobs (``check_celery_queue``) -> their last sample's time."""
        return f"{self.prefix}{{queues}}:measured"


def bucket_ttl_s(window_s: int) -> int:
    """Minute buckets outlive the window twice over, so the roll can always subtract them."""
    return 2 * window_s + 600
