"""Events per second from the first track call to a correct summary, and Redis memory after.

N events (full 1,000,000, quick 50,000) over 100 endpoints, stamped over the last hour with
``timestamp=``, are tracked by one MetricsMonitor (flusher thread on), flushed, and drained
by ``Aggregator.drain`` either in this process or by 2 worker processes in parallel (started
before the clock, as running workers would be), with 1 or 8 shards; one more variant has a
worker process draining all the while tracking goes on, as a deployment runs. Work runs in chunks of
250,000 events (track, flush, drain) so neither the app buffer nor the raw lists grow without
bound. Full mode runs the throughput cases 3 times, interleaved, and reports the median of
each phase. The summary is then checked exactly against the generated reference: total and
per-endpoint requests and errors, average response time, nothing pending, folded or dropped.

Memory is ``INFO memory`` used_memory after the run minus the figure before it (each case
uses its own key prefix, deleted afterwards). Also memory against the number of events and
of endpoints.

    .venv/bin/python bench/end_to_end.py [--quick] [--main-case]

``--main-case`` runs only the headline case (1M events, 8 shards, drained by this process,
once) and reports its events/s, drain rate and memory: for before/after comparisons
(``bench/compare.py``).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import queue
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import _common as common

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import Aggregator, connect

CHUNK = 250_000
POOL = 10_007  # a prime: the endpoint/response-time/status cycle does not line up with chunks
MARGIN_S = 240  # the oldest minutes of the hour are left empty: the window slides during a run
SCRIPT_BUDGET_S = 480.0


@dataclass
class Case:
    label: str
    events: int
    endpoints: int = 100
    shards: int = 8
    procs: int = 1
    live: bool = False  # timestamps from the clock instead of spread over the hour
    pipelined: bool = False  # one worker drains while tracking goes on


@dataclass
class Outcome:
    case: Case
    track_s: float = 0.0
    drain_s: float = 0.0
    summary_s: float = 0.0
    server_cpu_s: float = 0.0
    memory: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.track_s + self.drain_s + self.summary_s

    def rate(self) -> float:
        return self.case.events / self.total_s

    def drain_rate(self) -> float:
        return self.case.events / self.drain_s


# -- drain workers -----------------------------------------------------------------------------


def drain_worker(commands: Any, results: Any) -> None:
    """Runs in a worker process: drain the shards it is told to, report events and seconds."""
    aggregators: dict[str, Aggregator] = {}
    results.put(("ready", 0, 0.0))
    while True:
        command = commands.get()
        if command is None:
            return
        settings, shards, expected = command
        try:
            agg = aggregators.get(settings.key_prefix)
            if agg is None:
                agg = aggregators[settings.key_prefix] = Aggregator(connect(settings), settings)
            t0 = time.perf_counter()
            drained = agg.drain(shards).events
            # expected > 0: keep draining as events arrive until that many were drained
            while drained < expected and time.perf_counter() - t0 < 600:
                more = agg.drain(shards).events
                drained += more
                if not more:
                    time.sleep(0.005)
            results.put(("done", drained, time.perf_counter() - t0))
        except BaseException:
            results.put(("error", 0, traceback.format_exc()))
            raise


class Workers:
    def __init__(self, count: int) -> None:
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(target=drain_worker, args=(c, self.results), daemon=True)
            for c in self.commands
        ]
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self._get("ready")

    def _get(self, expected: str) -> tuple[int, float]:
        try:
            kind, events, value = self.results.get(timeout=600)
        except queue.Empty:
            raise TimeoutError("a drain worker did not answer within 600 s") from None
        if kind == "error":
            raise RuntimeError(f"drain worker failed:\n{value}")
        assert kind == expected, kind
        return events, value

    def drain(self, settings: Settings) -> int:
        n = len(self.commands)
        for k, cmd in enumerate(self.commands):
            if settings.shards >= n:  # split the shards; with fewer shards, all drain all
                shards = [s for s in range(settings.shards) if s % n == k]
            else:
                shards = list(range(settings.shards))
            cmd.put((settings, shards, 0))
        return sum(self._get("done")[0] for _ in self.commands)

    def start_stream(self, settings: Settings, expected: int) -> None:
        """Worker 0 drains every shard as events arrive, until ``expected`` were drained."""
        self.commands[0].put((settings, list(range(settings.shards)), expected))

    def wait_stream(self) -> int:
        return self._get("done")[0]

    def close(self) -> None:
        for cmd in self.commands:
            cmd.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


# -- one case ----------------------------------------------------------------------------------


def workload(endpoint_count: int) -> list[tuple[str, float, int]]:
    rng = random.Random(endpoint_count)
    eps = common.endpoints(endpoint_count)
    rts = common.response_times(POOL)
    sts = common.statuses(POOL)
    return [(eps[rng.randrange(endpoint_count)], rts[i], sts[i]) for i in range(POOL)]


def reference(pool: list[tuple[str, float, int]], n: int) -> dict[str, list[float]]:
    """Per endpoint: [requests, errors, sum of seconds] of the first n events of the cycle."""
    full, rest = divmod(n, len(pool))
    ref: dict[str, list[float]] = {}
    for i, (ep, rt, st) in enumerate(pool):
        times = full + (1 if i < rest else 0)
        if times:
            r = ref.setdefault(ep, [0, 0, 0.0])
            r[0] += times
            r[1] += times if st >= 500 else 0
            r[2] += times * rt
    return ref


def run_case(url: str, case: Case, workers: Workers | None, report: common.Report) -> Outcome:
    settings = common.bench_settings(
        url,
        shards=case.shards,
        max_endpoints=max(500, case.endpoints + 10),
        buffer_max=2 * CHUNK,
    )
    client = common.client_for(url)
    out = Outcome(case)
    monitor = MetricsMonitor(settings)
    pool = workload(case.endpoints)
    ref = reference(pool, case.events)
    base = common.used_memory(client)
    cpu0 = common.server_cpu_s(client)
    t_case = time.time()
    first = t_case - settings.window_s + MARGIN_S
    step = (settings.window_s - MARGIN_S) / case.events
    track = monitor.track_api_request
    try:
        if case.pipelined:
            assert workers is not None
            workers.start_stream(settings, case.events)
        for lo in range(0, case.events, CHUNK):
            hi = min(case.events, lo + CHUNK)
            t0 = time.perf_counter()
            if case.live:
                for j in range(lo, hi):
                    ep, rt, st = pool[j % POOL]
                    track(ep, rt, st)
            else:
                for j in range(lo, hi):
                    ep, rt, st = pool[j % POOL]
                    track(ep, rt, st, timestamp=first + j * step)
            report.check(monitor.flush(timeout=300), f"{case.label}: flush timed out")
            t1 = time.perf_counter()
            out.track_s += t1 - t0
            if case.pipelined:
                continue
            drained = workers.drain(settings) if workers else monitor.aggregate().events
            out.drain_s += time.perf_counter() - t1
            report.check(drained == hi - lo, f"{case.label}: drained {drained} of {hi - lo}")
        if case.pipelined:
            assert workers is not None
            t1 = time.perf_counter()
            drained = workers.wait_stream()
            out.drain_s = time.perf_counter() - t1  # the drain's tail after the last flush
            report.check(drained == case.events, f"{case.label}: drained {drained:,}")
        t0 = time.perf_counter()
        summary = monitor.get_metrics_summary()
        out.summary_s = time.perf_counter() - t0
        out.server_cpu_s = common.server_cpu_s(client) - cpu0
        check_summary(summary, ref, case, report)
        report.check(time.time() - t_case < MARGIN_S - 60, f"{case.label}: run outlasted margin")
        out.memory = common.used_memory(client) - base
        out.kinds = common.memory_by_kind(client, settings.key_prefix)
    finally:
        monitor.close()
        common.delete_prefix(client, settings.key_prefix)
        client.close()
    return out


def check_summary(
    summary: dict[str, Any], ref: dict[str, list[float]], case: Case, report: common.Report
) -> None:
    api = summary["api"]
    total = sum(v["total_requests"] for v in api.values())
    label = case.label
    report.check(total == case.events, f"{label}: summary counts {total:,} of {case.events:,}")
    counts = {ep: v["total_requests"] for ep, v in api.items()}
    report.check(counts == {ep: r[0] for ep, r in ref.items()}, f"{label}: per-endpoint counts")
    errors = {ep: v["error_count"] for ep, v in api.items()}
    report.check(errors == {ep: r[1] for ep, r in ref.items()}, f"{label}: per-endpoint errors")
    bad_avg = [
        ep
        for ep, r in ref.items()
        if ep in api and abs(api[ep]["avg_response_time"] - r[2] / r[0]) > 1e-9 * (r[2] / r[0])
    ]
    report.check(not bad_avg, f"{label}: average response time off for {bad_avg[:3]}")
    report.check(summary["pending_events"] == 0, f"{label}: pending {summary['pending_events']}")
    report.check(not any(summary["dropped_events"].values()), f"{label}: dropped events")
    report.check(summary["endpoints_folded"] == 0, f"{label}: endpoints folded")


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    """The median of each phase's seconds over repeated runs; memory of the first run."""
    first = outcomes[0]
    return Outcome(
        first.case,
        track_s=common.median([o.track_s for o in outcomes]),
        drain_s=common.median([o.drain_s for o in outcomes]),
        summary_s=common.median([o.summary_s for o in outcomes]),
        server_cpu_s=common.median([o.server_cpu_s for o in outcomes]),
        memory=first.memory,
        kinds=first.kinds,
    )


# -- the runs ----------------------------------------------------------------------------------


def main_case(args: Any, report: common.Report, n: int) -> int:
    with common.redis_server() as url:
        one = run_case(url, Case(f"{n:,} ev, 8 shard(s), 1 proc(s)", n), None, report)
    report.figure("end-to-end ev/s, 1 proc, 8 shards", f"{one.rate():,.0f}")
    report.figure("drain ev/s, 1 proc, 8 shards", f"{one.drain_rate():,.0f}")
    report.figure("track+flush µs/event", f"{one.track_s / n * 1e6:.2f}")
    report.figure("drain s per 1M events", f"{one.drain_s / n * 1e6:.2f}")
    report.figure(f"memory, {n:,} ev x 100 endpoints (MB)", f"{one.memory / 1e6:.2f}")
    return report.finish(args)


def main() -> int:
    args = common.parse_args(
        __doc__ or "",
        lambda p: p.add_argument("--main-case", action="store_true", help="the 1M/8/1 case"),
    )
    report = common.Report("end_to_end")
    n = 20_000 if args.quick else 1_000_000
    if args.main_case:
        return main_case(args, report, n)
    reps = 1 if args.quick else 3
    started = time.monotonic()
    with common.redis_server() as url:
        workers = Workers(2)
        try:
            runs: dict[tuple[int, int, str], list[Outcome]] = {}
            order = [(1, 1, ""), (1, 2, ""), (8, 1, ""), (8, 2, ""), (8, 1, "live"), (8, 1, "pipe")]
            for rep in range(reps):  # interleaved, reversed every other time: drift hits all
                for shards, procs, kind in order if rep % 2 == 0 else order[::-1]:
                    label = {
                        "": f"{shards} shard(s), {procs} proc(s)",
                        "live": "live stamps, 8 shards, 1 proc",
                        "pipe": "8 shards, 1 worker draining meanwhile",
                    }[kind]
                    case = Case(
                        f"{n:,} ev, {label}",
                        n,
                        shards=shards,
                        procs=procs,
                        live=kind == "live",
                        pipelined=kind == "pipe",
                    )
                    runs.setdefault((shards, procs, kind), []).append(
                        run_case(
                            url, case, workers if procs == 2 or kind == "pipe" else None, report
                        )
                    )
            speed = {(k[0], k[1]): median_outcome(v) for k, v in runs.items() if not k[2]}
            live = median_outcome(runs[8, 1, "live"])
            pipe = median_outcome(runs[8, 1, "pipe"])
            small = 5_000 if args.quick else 100_000
            by_events = [run_case(url, Case(f"{small:,} ev", small), None, report), speed[8, 1]]
            per_event = speed[8, 1].total_s / n
            big = 5 * n
            if time.monotonic() - started + 1.3 * per_event * big < SCRIPT_BUDGET_S:
                by_events.append(run_case(url, Case(f"{big:,} ev", big), None, report))
            else:
                print(f"(skipped {big:,} events: would not fit the time budget)")
            by_endpoints = [
                run_case(url, Case(f"{e} endpoints", n, endpoints=e), None, report)
                if e != 100
                else speed[8, 1]
                for e in (10, 100, 1000)
            ]
        finally:
            workers.close()
    show(speed, live, pipe, by_events, by_endpoints, report, args.quick, reps)
    return report.finish(args)


def show(
    speed: dict[tuple[int, int], Outcome],
    live: Outcome,
    pipe: Outcome,
    by_events: list[Outcome],
    by_endpoints: list[Outcome],
    report: common.Report,
    quick: bool,
    reps: int,
) -> None:
    rows = [
        (
            o.case.label,
            f"{o.track_s:.2f}",
            f"{o.drain_s:.2f}",
            f"{o.summary_s * 1000:.0f}",
            f"{o.rate():,.0f}",
            "(overlapped)" if o.case.pipelined else f"{o.drain_rate():,.0f}",
            f"{o.server_cpu_s / o.case.events * 1e6:.2f}",
            common.fmt_mb(o.memory),
        )
        for o in [*speed.values(), live, pipe]
    ]
    common.print_table(
        f"throughput, median of each phase over {reps} run(s) (hour-spread timestamps unless "
        "'live')",
        (
            "case",
            "track+flush s",
            "drain s",
            "summary ms",
            "end-to-end ev/s",
            "drain ev/s",
            "server CPU µs/ev",
            "memory",
        ),
        rows,
    )
    mem_rows = [
        (
            o.case.label,
            f"{o.case.events:,}",
            o.case.endpoints,
            common.fmt_mb(o.memory),
            f"{o.memory / o.case.events:.1f}",
            f"{o.memory / o.case.endpoints / 1000:.1f}",
            common.fmt_mb(o.kinds.get("m", 0)),
            common.fmt_mb(o.kinds.get("roll", 0)),
            f"{common.fmt_mb(o.kinds.get('push', 0))} ({o.kinds.get('#push', 0):,})",
        )
        for o in [*by_events, *by_endpoints[:1], *by_endpoints[2:]]
    ]
    common.print_table(
        "Redis memory after aggregation (8 shards, hour-spread; by kind: MEMORY USAGE sums)",
        (
            "case",
            "events",
            "endpoints",
            "used_memory +",
            "B/event",
            "kB/endpoint",
            "minute buckets",
            "rolls",
            "push-dedupe keys (#)",
        ),
        mem_rows,
    )
    one = speed[8, 1]
    goal = None if quick else one.rate() >= 350_000
    report.figure("end-to-end ev/s, 1 proc, 8 shards", f"{one.rate():,.0f}", ">= 350,000", goal)
    report.figure("end-to-end ev/s, 1 proc, 1 shard", f"{speed[1, 1].rate():,.0f}", "")
    report.figure("end-to-end ev/s, live stamps", f"{live.rate():,.0f}", "")
    report.figure("end-to-end ev/s, draining meanwhile", f"{pipe.rate():,.0f}", "")
    report.figure("drain ev/s, 1 proc, 8 shards", f"{one.drain_rate():,.0f}", "")
    for shards in (8, 1):
        drain_ratio = speed[shards, 2].drain_rate() / speed[shards, 1].drain_rate()
        e2e_ratio = speed[shards, 2].rate() / speed[shards, 1].rate()
        ok = None if quick or shards == 1 else drain_ratio >= 1.4
        report.figure(
            f"2 procs / 1 proc drain, {shards} shard(s)",
            f"{drain_ratio:.2f}x",
            ">= 1.4x" if shards == 8 else "",
            ok,
        )
        report.figure(f"2 procs / 1 proc end-to-end, {shards} shard(s)", f"{e2e_ratio:.2f}x")
    report.figure(
        f"memory, {one.case.events:,} ev x 100 endpoints",
        common.fmt_mb(one.memory),
        "<= 20 MB",
        None if quick else one.memory <= 20e6,
    )
    for lo, hi in itertools.pairwise(by_events):
        growth = hi.memory / lo.memory
        no_push = (hi.memory - hi.kinds.get("push", 0)) / (lo.memory - lo.kinds.get("push", 0))
        last = hi is by_events[-1]
        report.figure(
            f"memory {lo.case.events:,} -> {hi.case.events:,} events",
            f"{growth:.2f}x ({no_push:.2f}x w/o push keys)",
            "flat (<= 1.5x)" if last else "",
            None if quick or not last else growth <= 1.5,
        )
    e_growth = by_endpoints[2].memory / by_endpoints[1].memory
    report.figure(
        "memory 1,000 / 100 endpoints",
        f"{e_growth:.2f}x",
        "linear (<= 12x)",
        None if quick else e_growth <= 12,
    )


if __name__ == "__main__":
    raise SystemExit(main())
