"""Caller cost of ``MetricsMonitor.track_api_request`` against prometheus_client, statsd and
a bare ``deque.append``, with 1, 4 and 16 app threads calling at once.

Each thread times blocks of 1,000 calls with ``perf_counter_ns``; the per-call cost is the
median block over all threads and rounds (rounds interleave the variants, so a noisy moment
hits them all). The monitor's flusher thread runs and pushes to the private Valkey meanwhile;
"wall" is the whole run's elapsed time per call over all threads, and for the monitor it
includes the final flush (the flusher's share of the process's CPU). At the end every tracked
event is aggregated and counted: a run that lost one is reported as a failure.

    .venv/bin/python bench/track_cost.py [--quick]
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import _common as common
import statsd
from prometheus_client import CollectorRegistry, Counter, Histogram

from monitor_worker.monitor import MetricsMonitor

BLOCK = 1_000
THREADS = (1, 4, 16)
Call = Callable[[str, float, int], Any]


def make_calls() -> list[tuple[str, float, int]]:
    eps = common.endpoints()
    rts = common.response_times(BLOCK)
    sts = common.statuses(BLOCK)
    return [(eps[i % len(eps)], rts[i], sts[i]) for i in range(BLOCK)]


def run_threads(
    fn: Call,
    threads: int,
    blocks: int,
    calls: list[tuple[str, float, int]],
    after_block: Callable[[], None] | None = None,
) -> tuple[list[float], int]:
    """Per-call ns of every timed block of every thread, and the run's wall time (ns)."""
    barrier = threading.Barrier(threads + 1, timeout=60)
    results: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(out: list[float]) -> None:
        clock = time.perf_counter_ns
        try:
            barrier.wait()
            for _ in range(blocks):
                t0 = clock()
                for ep, rt, st in calls:
                    fn(ep, rt, st)
                out.append((clock() - t0) / BLOCK)
                if after_block is not None:
                    after_block()
        except BaseException as exc:  # reported by the caller, never swallowed
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter_ns()
    for t in pool:
        t.join(timeout=300)
    wall = time.perf_counter_ns() - t0
    if errors:
        raise errors[0]
    return [v for out in results for v in out], wall


class Variant:
    """One way of recording a request; ``fn`` is called as fn(endpoint, seconds, status)."""

    def __init__(self, name: str, fn: Call) -> None:
        self.name = name
        self.fn = fn
        self.samples: dict[int, list[float]] = {n: [] for n in THREADS}
        self.walls: dict[int, list[float]] = {n: [] for n in THREADS}

    def median(self, threads: int) -> float:
        return common.median(self.samples[threads])


def prometheus_variant() -> Variant:
    registry = CollectorRegistry()
    hist = Histogram("api_response_seconds", "API response time", ["endpoint"], registry=registry)
    count = Counter("api_requests", "API requests", ["endpoint", "status"], registry=registry)

    def observe(ep: str, rt: float, st: int) -> None:
        hist.labels(ep).observe(rt)
        count.labels(ep, st).inc()

    return Variant("prometheus_client", observe)


def statsd_variant(port: int) -> Variant:
    client = statsd.StatsClient("127.0.0.1", port, prefix="bench")

    def timing(ep: str, rt: float, st: int) -> None:
        client.timing(ep, rt * 1000.0)

    return Variant("statsd timing() UDP", timing)


def deque_variant() -> Variant:
    append = deque[tuple[float, str, float, int]]().append
    now = time.time

    def record(ep: str, rt: float, st: int) -> None:
        append((now(), ep, rt, st))

    return Variant("deque.append (floor)", record)


def empty_variant() -> Variant:
    def nothing(ep: str, rt: float, st: int) -> None:
        return None

    return Variant("(empty call: harness)", nothing)


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("track_cost")
    rounds = 1 if args.quick else 3
    calls_per_round = 20_000 if args.quick else 200_000
    calls = make_calls()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives nothing: the kernel drops
    sink.bind(("127.0.0.1", 0))
    others = [
        prometheus_variant(),
        statsd_variant(sink.getsockname()[1]),
        deque_variant(),
        empty_variant(),
    ]
    ours = Variant("monitor_worker", lambda ep, rt, st: None)
    tracked: dict[int, int] = dict.fromkeys(THREADS, 0)
    peak: dict[int, int] = dict.fromkeys(THREADS, 0)
    with common.redis_server() as url:
        client = common.client_for(url)
        # Large enough for the whole run, so a flusher that falls behind cannot drop events.
        monitors = {
            n: MetricsMonitor(common.bench_settings(url, buffer_max=5_000_000)) for n in THREADS
        }
        try:
            for m in monitors.values():  # warm-up: starts the flusher, connects, loads scripts
                for ep, rt, st in calls:
                    m.track_api_request(ep, rt, st)
                m.flush(timeout=30)
            for n in THREADS:
                tracked[n] = len(calls)
            for _round in range(rounds):
                for n in THREADS:
                    blocks = max(2, calls_per_round // (BLOCK * n))
                    m = monitors[n]
                    ours.fn = m.track_api_request

                    def probe(m: MetricsMonitor = m, n: int = n) -> None:
                        peak[n] = max(peak[n], m.buffered())

                    samples, wall = run_threads(ours.fn, n, blocks, calls, probe)
                    t0 = time.perf_counter_ns()
                    report.check(m.flush(timeout=120), f"flush after {n} thread(s) timed out")
                    ours.samples[n] += samples
                    ours.walls[n].append((wall + time.perf_counter_ns() - t0) / (n * blocks))
                    tracked[n] += n * blocks * BLOCK
                    for v in others:
                        samples, wall = run_threads(v.fn, n, blocks, calls)
                        v.samples[n] += samples
                        v.walls[n].append(wall / (n * blocks))
            verify(monitors, tracked, report)
        finally:
            for m in monitors.values():
                m.close()
                common.delete_prefix(client, m.settings.key_prefix)
            client.close()
    sink.close()
    show(ours, others, peak, report, args.quick)
    return report.finish(args)


def verify(monitors: dict[int, MetricsMonitor], tracked: dict[int, int], report: Any) -> None:
    """Aggregate each monitor's events and compare the summary with what was tracked."""
    for n, m in monitors.items():
        m.aggregate()
        summary = m.get_metrics_summary()
        counted = sum(v["total_requests"] for v in summary["api"].values())
        dropped = sum(summary["dropped_events"].values())
        report.check(
            counted == tracked[n] and dropped == 0,
            f"{n} thread(s): tracked {tracked[n]:,}, counted {counted:,}, dropped {dropped}",
        )
        print(
            f"verified {n:>2} thread(s): tracked {tracked[n]:,}, counted {counted:,}, "
            f"dropped {dropped}"
        )


def show(
    ours: Variant, others: list[Variant], peak: dict[int, int], report: Any, quick: bool
) -> None:
    prom = others[0]
    rows = []
    for v in [ours, *others]:
        row: list[str] = [v.name]
        for n in THREADS:
            med = v.median(n)
            row += [
                f"{med:,.0f}",
                f"{common.percentile(v.samples[n], 0.9):,.0f}",
                f"{common.median(v.walls[n]) / BLOCK:,.0f}",
            ]
        row.append(f"{prom.median(1) / v.median(1):.1f}x")
        rows.append(row)
    headers = ["variant"]
    for n in THREADS:
        headers += [f"{n}t med", f"{n}t p90", f"{n}t wall"]
    headers.append("prom/x 1t")
    common.print_table(
        "ns per call (median / p90 of 1,000-call blocks; wall = elapsed per call "
        "over all threads, ours incl. flush)",
        headers,
        rows,
    )
    print(
        f"peak events buffered in the app (default MONITOR_BUFFER_MAX is 100,000): "
        f"{', '.join(f'{n}t {peak[n]:,}' for n in THREADS)}"
    )
    one = ours.median(1)
    report.figure(
        "track median, 1 thread", common.fmt_ns(one), "<= 1 µs", None if quick else one <= 1000
    )
    ratio = prom.median(1) / one
    report.figure(
        "prometheus / track, 1 thread", f"{ratio:.1f}x", ">= 4x", None if quick else ratio >= 4
    )
    for n in THREADS[1:]:
        r = prom.median(n) / ours.median(n)
        report.figure(
            f"prometheus / track, {n} threads",
            f"{r:.1f}x",
            ">= 1x" if n == 16 else "",
            (None if quick else r >= 1) if n == 16 else None,
        )
    wall = common.median(ours.walls[1]) / BLOCK
    report.figure(
        "track wall incl. flush, 1 thread",
        common.fmt_ns(wall),
        f"(prometheus wall {common.fmt_ns(common.median(prom.walls[1]) / BLOCK)})",
    )


if __name__ == "__main__":
    raise SystemExit(main())
