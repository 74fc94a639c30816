"""Where the time of the pipeline goes, per event: flush (take from the buffer, encode,
push) and drain (claim, fold, records, apply), for events stamped over the last hour and for live
events (all in the current minute), plus the top functions of a cProfile of the hour-spread
drain.

The flush is the tracker's own flusher code: the buffer of a ``Tracker`` (inline mode, so it
runs on this thread) is filled with the items ``track_api_request`` appends, and
``Tracker.flush()`` takes, encodes and pushes them in 2,000-event batches. Its CPU time
(``time.thread_time``: this thread only, not the Redis server's) is what the flusher thread
costs the app process per event. The drain is ``Aggregator.drain`` with its steps timed by
a subclass; APPLY runs in the drain's applying thread while the next batch is claimed and
folded, so the steps add up to more than the drain.

    .venv/bin/python bench/profile_pipeline.py [--quick]
"""

from __future__ import annotations

import copy
import cProfile
import io
import pstats
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import _common as common

from monitor_worker.config import Settings
from monitor_worker.keys import ShardKeys
from monitor_worker.store import Aggregator, connect
from monitor_worker.tracking import Tracker
from monitor_worker.windows import Delta

FLUSH_BATCH = 2_000


class TimedAggregator(Aggregator):
    """Aggregator that adds up the seconds of each step of a drain."""

    def __init__(self, client: Any, settings: Settings) -> None:
        super().__init__(client, settings)
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.records = 0
        self.scripts = copy.copy(self.scripts)  # this aggregator's own, its APPLY timed
        script = self.scripts.apply

        def timed_apply(**kwargs: Any) -> Any:  # runs in the drain's applying thread
            t0 = time.perf_counter()
            try:
                return script(**kwargs)
            finally:
                self.seconds["apply"] += time.perf_counter() - t0

        self.scripts.apply = timed_apply  # type: ignore[assignment]

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

    def _apply_call(
        self, sk: ShardKeys, batch_id: str, entries: Sequence[bytes], now: float
    ) -> dict[str, list[Any]]:
        t0 = time.perf_counter()
        call = super()._apply_call(sk, batch_id, entries, now)
        self.seconds["arguments"] += time.perf_counter() - t0  # fold included, taken out below
        return call


def items(n: int, spread_s: float) -> list[tuple[Any, ...]]:
    """The buffered items of n ``track_api_request`` calls (the tuple the call appends)."""
    eps = common.endpoints()
    rts = common.response_times(4096)
    sts = common.statuses(4096)
    first = time.time() - spread_s
    step = spread_s / n
    return [
        ("a", first + i * step, eps[i % len(eps)], rts[i & 4095], sts[i & 4095]) for i in range(n)
    ]


def run(url: str, n: int, spread_s: float, profile: bool) -> dict[str, Any]:
    settings = common.bench_settings(
        url, flush_mode="inline", flush_batch=FLUSH_BATCH, buffer_max=n
    )
    client = connect(settings)
    row: dict[str, Any] = {"n": n, "spread": spread_s}
    try:
        tracker = Tracker(lambda: settings, client=client)
        tracker.track_api_request("/warm-up/", 0.1, 200)  # starts it, connects, loads scripts
        assert tracker.flush(timeout=30)
        tracker._buffer.extend(items(n, spread_s))
        t0, c0 = time.perf_counter(), time.thread_time()
        assert tracker.flush(timeout=600)
        row["flush"] = time.perf_counter() - t0
        row["flush_cpu"] = time.thread_time() - c0
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
        row.update({step: 0.0 for step in ("claim", "fold", "arguments", "apply")})
        row.update(agg.seconds)  # (an earlier package under compare.py times fewer steps)
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
        report.check(r["drained"] == n + 1, f"drained {r['drained']:,} of {n + 1:,}")

    def us(r: dict[str, Any], seconds: float) -> str:
        return f"{seconds / r['n'] * 1e6:.2f}"

    common.print_table(
        f"µs per event, {n:,} events over 100 endpoints, 8 shards (drain steps: claim = "
        "CLAIM script + reply parsing, fold = Python, records = APPLY's arguments, apply = "
        "APPLY script, in a thread, overlapping the next claim and fold)",
        (
            "timestamps",
            "flush (wall)",
            "flush CPU",
            "drain",
            "claim",
            "fold",
            "records",
            "apply",
            "records (api)",
            "µs/record in apply",
        ),
        [
            (
                "hour-spread" if r["spread"] else "live",
                us(r, r["flush"]),
                us(r, r["flush_cpu"]),
                us(r, r["drain"]),
                us(r, r["claim"]),
                us(r, r["fold"]),
                us(r, r["arguments"] - r["fold"]),
                us(r, r["apply"]),
                f"{r['records']:,}",
                f"{r['apply'] / max(1, r['records']) * 1e6:.1f}",
            )
            for r in rows
        ],
    )
    print("\ncProfile of the hour-spread drain (top 12 by own time):")
    print(profiled["profile"])
    spread = rows[0]
    report.figure(
        "drain µs/event hour-spread: APPLY time / drain time",
        f"{spread['apply'] / spread['drain'] * 100:.0f} %",
    )
    cpu = spread["flush_cpu"] / spread["n"] * 1e6
    report.figure("flusher CPU µs/event (take, encode, push)", f"{cpu:.2f}", "≤ 0.8", cpu <= 0.8)
    drain = spread["drain"] / spread["n"] * 1e6
    report.figure("drain µs/event hour-spread, 1 process", f"{drain:.2f}", "≤ 1.2", drain <= 1.2)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
