"""The archive: closed minute buckets (and queue samples) into history rows, exactly once.

Every write to a minute bucket also counts a mark in its shard's dirty hash (the APPLY
script). A run reads each closed, marked minute together with its mark in one atomic step
(scripts.SNAPSHOT), merges the snapshot into the history store (a snapshot not newer than the
stored minute adds nothing: history/rollup.py), and then clears the mark only if it is still
the one read (scripts.UNMARK). So:

- killed anywhere, the marks stay and the next run archives those minutes again, adding
  nothing twice;
- two runs at once both merge, and the store's atomic merge lets only the newer snapshot count;
- a flush that lands after its minute was archived marks the minute again: it is archived
  again and only the difference is added to its hour and day;
- a marked minute whose bucket expired first (history store down for longer than the
  buckets live) is recorded as a gap and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import queues, scripts
from ..config import BUCKET_S, Settings
from ..keys import Keys, shard_of
from ..windows import Window, bucket_of
from .codec import Snapshot
from .rollup import merge_ranges, queue_snapshots, snapshots_of_bucket

if TYPE_CHECKING:
    from . import HistoryStore

log = logging.getLogger("monitor_worker.history")

CHUNK_MINUTES = 30  # minutes of one shard merged per store transaction


@dataclass
class ArchiveResult:
    minutes: int = 0  # marked minutes archived
    rows: int = 0  # history rows written
    gaps: int = 0  # marked minutes whose bucket expired before it was archived
    left: int = 0  # closed marked minutes left for the next run (time budget spent)


def grace_s(settings: Settings) -> float:
    """How long after its end a minute is archived: its last flushes have been aggregated."""
    return settings.flush_interval_s + settings.aggregate_interval_s + 5.0


class Archiver:
    """Archives closed minutes of every shard; safe to run in many processes at once.

    ``hook`` (tests only) is called with the name of each step done: ``"read"`` after a chunk
    of buckets was read, ``"written"`` after it was merged into the store, before the marks
    are cleared.
    """

    def __init__(
        self,
        client: Any,
        settings: Settings,
        history: HistoryStore,
        *,
        hook: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.history = history
        self.keys = Keys(settings.key_prefix, settings.shards)
        self.hook = hook or (lambda step: None)
        self._snapshot = client.register_script(scripts.SNAPSHOT)
        self._unmark = client.register_script(scripts.UNMARK)

    def run(self, now: float | None = None, *, budget_s: float | None = None) -> ArchiveResult:
        at = time.time() if now is None else now
        started = time.monotonic()
        last_closed = bucket_of(at - grace_s(self.settings)) - 1
        result = ArchiveResult()
        for shard in range(self.settings.shards):
            sk = self.keys.shard(shard)
            marks = self.client.hgetall(sk.dirty)
            todo = sorted(m for m in (int(k) for k in marks) if m <= last_closed)
            for i in range(0, len(todo), CHUNK_MINUTES):
                if budget_s is not None and time.monotonic() - started > budget_s:
                    result.left += len(todo) - i
                    break
                self._chunk(shard, todo[i : i + CHUNK_MINUTES], at, result)
        self._queues(at, last_closed)
        self.history.expire(at)
        return result

    def _chunk(self, shard: int, minutes: list[int], now: float, result: ArchiveResult) -> None:
        sk = self.keys.shard(shard)
        reply = self._snapshot(keys=[sk.dirty], args=[sk.base, *minutes])
        snapshots: list[Snapshot] = []
        seen: list[Any] = []
        lost: list[int] = []
        for minute, mark, flat in zip(minutes, reply[0::2], reply[1::2], strict=True):
            seen += [minute, mark]
            if not flat:
                lost.append(minute * BUCKET_S)
                continue
            window = Window()
            window.add_fields(dict(zip(flat[0::2], flat[1::2], strict=True)))
            snapshots += snapshots_of_bucket(window, minute * BUCKET_S)
        self.hook("read")
        result.rows += self.history.write(shard, snapshots, now)
        if lost:
            self.history.add_gaps(lost, now)
            log.warning(
                "history gap: %d minute(s) of shard %d expired before they were archived: %s",
                len(lost),
                shard,
                merge_ranges(lost),
            )
        self.hook("written")
        self._unmark(keys=[sk.dirty], args=seen)
        result.minutes += len(minutes) - len(lost)
        result.gaps += len(lost)

    def _queues(self, now: float, last_closed: int) -> None:
        """Queue lengths per closed minute (max and last) from the samples still kept; merging
        them again changes nothing, so every run merges all it sees."""
        names = queues.queue_names(self.client, self.settings, now)  # measured ones too
        samples = queues.read_samples(self.client, self.settings, names)
        for name, kept in samples.items():
            series = [(float(s["t"]), int(s["n"])) for s in kept]
            snaps = queue_snapshots(name, series, last_closed * BUCKET_S)
            if snaps:
                self.history.write(shard_of(name, self.settings.shards), snaps, now)
