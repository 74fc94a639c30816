"""The burst path, measured as a user would: N events (full 1,000,000, quick 50,000) over 100
endpoints tracked in one burst by one MetricsMonitor (live timestamps, flusher thread on,
``MONITOR_BUFFER_MAX`` raised so nothing is dropped), ``flush()``, the ``monitor-worker
aggregate`` command in a fresh process (its start-up included), then
``get_metrics_summary()``, which must count every event exactly.

    .venv/bin/python bench/burst.py [--quick] [--runs K]

Each phase is reported in µs per event (median over the runs) and the whole path in events/s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Any

import _common as common

from monitor_worker.monitor import MetricsMonitor

POOL = 10_007
GOAL_EV_S = 250_000


def run(url: str, n: int, report: common.Report) -> dict[str, float]:
    settings = common.bench_settings(url, buffer_max=n + 10_000)
    client = common.client_for(url)
    monitor = MetricsMonitor(settings)
    eps = common.endpoints()
    rts = common.response_times(POOL)
    sts = common.statuses(POOL)
    pool = [(eps[i % len(eps)], rts[i], sts[i]) for i in range(POOL)]
    env = {
        **os.environ,
        "MONITOR_REDIS_URL": url,
        "MONITOR_KEY_PREFIX": settings.key_prefix,
        "MONITOR_SHARDS": str(settings.shards),
    }
    track = monitor.track_api_request
    phases: dict[str, float] = {}
    try:
        monitor.track_api_request("/warm-up/", 0.1, 200)  # starts the flusher, connects
        report.check(monitor.flush(timeout=30), "warm-up flush")
        t0 = time.perf_counter()
        for i in range(n):
            ep, rt, st = pool[i % POOL]
            track(ep, rt, st)
        t1 = time.perf_counter()
        report.check(monitor.flush(timeout=600), "flush timed out")
        t2 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "monitor_worker.cli", "aggregate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        t3 = time.perf_counter()
        found = re.search(r"aggregated (\d+) events", done.stdout)
        aggregated = int(found.group(1)) if found else -1
        report.check(aggregated == n + 1, f"aggregate: {done.stdout!r} {done.stderr[-500:]!r}")
        summary = monitor.get_metrics_summary()
        t4 = time.perf_counter()
        check_summary(summary, n + 1, report)
        phases = {"track": t1 - t0, "flush": t2 - t1, "aggregate": t3 - t2, "summary": t4 - t3}
    finally:
        monitor.close()
        common.delete_prefix(client, settings.key_prefix)
        client.close()
    return phases


def check_summary(summary: dict[str, Any], expected: int, report: common.Report) -> None:
    total = sum(v["total_requests"] for v in summary["api"].values())
    report.check(total == expected, f"summary counts {total:,} of {expected:,}")
    report.check(summary["pending_events"] == 0, f"pending {summary['pending_events']}")
    report.check(not any(summary["dropped_events"].values()), "dropped events")


def main() -> int:
    args = common.parse_args(
        __doc__ or "", lambda p: p.add_argument("--runs", type=int, default=1, help="repeats")
    )
    report = common.Report("burst")
    n = 50_000 if args.quick else 1_000_000
    with common.redis_server() as url:
        runs = [run(url, n, report) for _ in range(args.runs)]
    if not all(runs):
        return report.finish(args)
    phases = {k: common.median([r[k] for r in runs]) for k in runs[0]}
    rates = [n / sum(r.values()) for r in runs]
    common.print_table(
        f"burst path, {n:,} events over 100 endpoints, median of {len(runs)} run(s)",
        ("phase", "s", "µs/event"),
        [(k, f"{v:.2f}", f"{v / n * 1e6:.2f}") for k, v in phases.items()],
    )
    rate = common.median(rates)
    report.figure(
        "burst ev/s (track, flush, CLI aggregate, summary)",
        f"{rate:,.0f}",
        f">= {GOAL_EV_S:,}",
        None if args.quick else rate >= GOAL_EV_S,
    )
    for k, v in phases.items():
        report.figure(f"burst {k} µs/event", f"{v / n * 1e6:.2f}")
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
