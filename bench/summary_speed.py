"""Time to read the current window: ``get_metrics_summary()``, ``store.read_window`` and the
rule evaluation, with 10, 100 and 1,000 endpoints and every minute bucket of the hour filled.

Events are tracked with timestamps in each minute of the last hour (full: 5 per endpoint
and minute, quick: 1), flushed and aggregated; then each read is repeated and its median
reported. ``read_window`` is timed twice: for the current window (the aggregator's rolling
sum plus at most a few buckets) and for a window that ended 5 minutes ago (every bucket
hash read and merged). The first summary is checked against what was tracked.

    .venv/bin/python bench/summary_speed.py [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import _common as common

from monitor_worker.config import BUCKET_S
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import read_window
from monitor_worker.windows import bucket_of, window_start

try:
    from monitor_worker.rules import evaluate
except ImportError:  # the rules module may not exist yet
    evaluate = None  # type: ignore[assignment]

ENDPOINTS = (10, 100, 1000)


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return common.median(times)


def run(
    url: str, endpoint_count: int, per_cell: int, every: int, repeats: int, report: common.Report
) -> dict[str, Any]:
    settings = common.bench_settings(url, max_endpoints=2000, buffer_max=1_000_000)
    client = common.client_for(url)
    monitor = MetricsMonitor(settings)
    eps = common.endpoints(endpoint_count)
    rts = common.response_times(4096)
    sts = common.statuses(4096)
    t_gen = time.time()
    first, last = window_start(t_gen, settings.window_s), bucket_of(t_gen)
    track = monitor.track_api_request
    row: dict[str, Any] = {"endpoints": endpoint_count}
    try:
        i = 0
        for bucket in range(last, first - 1, -every):
            for k in range(per_cell):
                ts = min(t_gen, bucket * BUCKET_S + (k + 0.5) * BUCKET_S / per_cell)
                for ep in eps:
                    track(ep, rts[i & 4095], sts[i & 4095], timestamp=ts)
                    i += 1
        report.check(monitor.flush(timeout=120), f"{endpoint_count} endpoints: flush timed out")
        t0 = time.perf_counter()
        monitor.aggregate()
        row["aggregate_s"] = time.perf_counter() - t0
        row["events"] = i
        summary = monitor.get_metrics_summary()
        at = summary["timestamp"]
        oldest = window_start(at, settings.window_s)
        in_window = sum(1 for b in range(last, first - 1, -every) if b >= oldest)
        expected = in_window * per_cell * endpoint_count
        counted = sum(v["total_requests"] for v in summary["api"].values())
        report.check(
            counted == expected and len(summary["api"]) == endpoint_count,
            f"{endpoint_count} endpoints: summary counts {counted:,}, expected {expected:,}",
        )
        row["summary_s"] = timed(monitor.get_metrics_summary, repeats)
        row["read_s"] = timed(lambda: read_window(client, settings, time.time()), repeats)
        row["read_past_s"] = timed(
            lambda: read_window(client, settings, time.time() - 300), repeats
        )
        if evaluate is not None:
            now = time.time()
            row["rules_s"] = timed(lambda: evaluate(summary, settings, now), repeats)
    finally:
        monitor.close()
        common.delete_prefix(client, settings.key_prefix)
        client.close()
    return row


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("summary_speed")
    per_cell = 1 if args.quick else 5
    every = 4 if args.quick else 1  # quick: every 4th minute of the hour
    repeats = 5 if args.quick else 25
    with common.redis_server() as url:
        rows = [run(url, e, per_cell, every, repeats, report) for e in ENDPOINTS]

    def ms(row: dict[str, Any], key: str) -> str:
        return f"{row[key] * 1000:.1f}" if key in row else "n/a"

    common.print_table(
        f"median ms over {repeats} calls (one hour of minute buckets, {per_cell} event(s) per "
        f"endpoint in every {'' if every == 1 else f'{every}th '}minute)",
        (
            "endpoints",
            "events",
            "aggregate s",
            "get_metrics_summary",
            "read_window now",
            "read_window 5 min ago",
            "rules.evaluate",
        ),
        [
            (
                r["endpoints"],
                f"{r['events']:,}",
                f"{r['aggregate_s']:.2f}",
                ms(r, "summary_s"),
                ms(r, "read_s"),
                ms(r, "read_past_s"),
                ms(r, "rules_s"),
            )
            for r in rows
        ],
    )
    if evaluate is None:
        print("rules.evaluate: monitor_worker.rules is not importable yet; column skipped")
    top = rows[-1]
    report.figure(
        "get_metrics_summary, 1,000 endpoints",
        f"{top['summary_s'] * 1000:.1f} ms",
        "<= 100 ms",
        None if args.quick else top["summary_s"] <= 0.1,
    )
    report.figure("read_window 5 min ago, 1,000 endpoints", f"{top['read_past_s'] * 1000:.1f} ms")
    if "rules_s" in top:
        report.figure("rules.evaluate, 1,000 endpoints", f"{top['rules_s'] * 1000:.1f} ms")
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
