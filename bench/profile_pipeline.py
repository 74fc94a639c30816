"""Where the time of the pipeline goes, per event: flush (encode, push) and drain (claim,
fold, apply), for events stamped over the last hour and for live events (all in the current
minute), plus the top functions of a cProfile of the hour-spread drain.

The flush path is replayed with the package's own pieces (``events.api_line`` and
``encode_chunk``, shard grouping, ``store.push_batches`` with 2,000-event batches, as the
tracker's flusher does);
the drain is ``Aggregator.drain`` with its steps timed by a subclass.

    .venv/bin/python bench/profile_pipeline.py [--quick]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import _common as common

from monitor_worker.config import Settings
from monitor_worker.events import api_line, encode_chunk, escape_name
from monitor_worker.keys import ShardKeys, shard_of
from monitor_worker.store import Aggregator, Scripts, connect, push_batches
from monitor_worker.windows import Delta

FLUSH_BATCH = 2_000


class TimedAggregator(Aggregator):
    """Aggregator that adds up the seconds of each step of a drain."""

    def __init__(self, client: Any, settings: Settings) -> None:
        super().__init__(client, settings)
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.records = 0

    def _claim(self, sk: ShardKeys) -> tuple[str | None, list[bytes], bool]:
        t0 = time.perf_counter()
        try:
            return super()._claim(sk)
        finally:
            self.seconds["claim"] += time.perf_counter() - t0

    def fold(self, entries: Sequence[bytes], now: float) -> Delta:
        t0 = time.perf_counter()
        delta = super().fold(entries, now)
        self.seconds["fold"] += time.perf_counter() - t0
        self.records += len(delta.api)
        return delta

    def _apply(self, sk: ShardKeys, batch_id: str, entries: Sequence[bytes], now: float) -> int:
        t0 = time.perf_counter()
        try:
            return super()._apply(sk, batch_id, entries, now)
        finally:
            self.seconds["apply"] += time.perf_counter() - t0


def encoded(n: int, spread_s: float) -> list[tuple[int, str]]:
    eps = common.endpoints()
    rts = common.response_times(4096)
    sts = common.statuses(4096)
    now = time.time()
    first = now - spread_s
    step = spread_s / n
    return [
        (
            i % len(eps),
            api_line(
                first + i * step, escape_name(eps[i % len(eps)]), rts[i & 4095], sts[i & 4095]
            ),
        )
        for i in range(n)
    ]


def run(url: str, n: int, spread_s: float, profile: bool) -> dict[str, Any]:
    settings = common.bench_settings(url)
    client = connect(settings)
    eps = common.endpoints()
    shard = [shard_of(ep, settings.shards) for ep in eps]
    row: dict[str, Any] = {"n": n, "spread": spread_s}
    try:
        t0 = time.perf_counter()
        items = encoded(n, spread_s)
        row["encode"] = time.perf_counter() - t0  # includes the generator's own loop
        scr = Scripts(client)
        t0 = time.perf_counter()
        for lo in range(0, n, FLUSH_BATCH):
            groups: dict[int, list[str]] = {}
            for ep_index, line in items[lo : lo + FLUSH_BATCH]:
                groups.setdefault(shard[ep_index], []).append(line)
            push_batches(
                client,
                scr,
                settings,
                [(s, f"{lo}-{s}", len(lines), encode_chunk(lines)) for s, lines in groups.items()],
            )
        row["push"] = time.perf_counter() - t0
        agg = TimedAggregator(client, settings)
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        drained = agg.drain()
        if prof is not None:
            prof.disable()
        row["drain"] = time.perf_counter() - t0
        row["drained"] = drained.events
        row.update(agg.seconds)
        row["records"] = agg.records
        if prof is not None:
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
            row["profile"] = text.getvalue()
    finally:
        common.delete_prefix(client, settings.key_prefix)
        client.close()
    return row


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("profile_pipeline")
    n = 50_000 if args.quick else 500_000
    with common.redis_server() as url:
        rows = [run(url, n, 3600 - 240, profile=False), run(url, n, 0, profile=False)]
        profiled = run(url, n, 3600 - 240, profile=True)  # timings distorted by the profiler
    for r in [*rows, profiled]:
        report.check(r["drained"] == n, f"drained {r['drained']:,} of {n:,}")

    def us(r: dict[str, Any], seconds: float) -> str:
        return f"{seconds / r['n'] * 1e6:.2f}"

    common.print_table(
        f"µs per event, {n:,} events over 100 endpoints, 8 shards (drain steps: claim = "
        "CLAIM script + reply parsing, fold = Python, apply = records + APPLY script)",
        (
            "timestamps",
            "encode",
            "push",
            "drain",
            "claim",
            "fold",
            "apply - fold",
            "records",
            "µs/record in apply",
        ),
        [
            (
                "hour-spread" if r["spread"] else "live",
                us(r, r["encode"]),
                us(r, r["push"]),
                us(r, r["drain"]),
                us(r, r["claim"]),
                us(r, r["fold"]),
                us(r, r["apply"] - r["fold"]),
                f"{r['records']:,}",
                f"{(r['apply'] - r['fold']) / r['records'] * 1e6:.1f}",
            )
            for r in rows
        ],
    )
    print("\ncProfile of the hour-spread drain (top 12 by own time):")
    print(profiled["profile"])
    spread = rows[0]
    report.figure(
        "drain µs/event hour-spread: APPLY share",
        f"{(spread['apply'] - spread['fold']) / spread['drain'] * 100:.0f} %",
    )
    report.figure("flush µs/event (encode + push)", us(spread, spread["encode"] + spread["push"]))
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
