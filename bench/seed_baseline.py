"""The seed design as the baseline: per-call cost and events kept under concurrency.

The seed kept, per endpoint, a list of ``{'timestamp', 'response_time', 'status_code',
'is_error'}`` dicts in the Django cache and on every call read it, appended, dropped the
entries older than an hour and wrote it back with a one-hour TTL. With Django's Redis cache
backend that is GET + pickle.loads + append + filter + pickle.dumps + SET EX 3600, which is
what ``seed_track`` does here.

Per-call cost is measured with 100, 1,000 and 10,000 stored events, kept at that size by a
clock that expires exactly one old entry per call. Then 4 processes write 2,000 events each
(quick: 250) at once, through the seed design and through MetricsMonitor, and the events
kept are counted.

    .venv/bin/python bench/seed_baseline.py [--quick]
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import time
from typing import Any

import _common as common
import redis

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor

WINDOW_S = 3600
PROCS = 4
SIZES = (100, 1_000, 10_000)


def seed_track(
    client: redis.Redis, key: str, response_time: float, status_code: int, now: float
) -> None:
    """One seed ``track_api_request``: read-modify-write of the pickled list (not atomic)."""
    entries: list[dict[str, Any]] = stored_list(client, key)
    entries.append(
        {
            "timestamp": now,
            "response_time": response_time,
            "status_code": status_code,
            "is_error": status_code >= 400,
        }
    )
    cutoff = now - WINDOW_S
    entries = [e for e in entries if e["timestamp"] > cutoff]
    client.set(key, pickle.dumps(entries, pickle.HIGHEST_PROTOCOL), ex=WINDOW_S)


def stored_list(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    """The seed's cache.get(key, []) through Django's Redis backend (pickled values)."""
    raw = client.get(key)
    if raw is None:
        return []
    assert isinstance(raw, bytes)
    entries: list[dict[str, Any]] = pickle.loads(raw)
    return entries


def seed_key(prefix: str, endpoint: str) -> str:
    return f":1:{prefix}api_metrics:{endpoint}"  # Django's KEY_PREFIX:VERSION:key form


def seed_cost(client: redis.Redis, prefix: str, size: int, calls: int) -> float:
    """Median ns of one seed call with ``size`` entries stored (steady: one expires per call)."""
    key = seed_key(prefix, f"/api/size-{size}/")
    # Entries sit on a grid of step seconds and the clock advances one step per call; with
    # step = window / (size - 0.5) exactly one entry leaves the hour per call (no ties).
    step = WINDOW_S / (size - 0.5)
    t_base = time.time()
    stored = [
        {
            "timestamp": t_base + (j + 1) * step,
            "response_time": 0.12,
            "status_code": 200,
            "is_error": False,
        }
        for j in range(-size, 0)
    ]
    client.set(key, pickle.dumps(stored, pickle.HIGHEST_PROTOCOL), ex=WINDOW_S)
    rts = common.response_times(calls)
    sts = common.statuses(calls)
    times = []
    for i in range(calls):
        now = t_base + (i + 1) * step
        t0 = time.perf_counter_ns()
        seed_track(client, key, rts[i], sts[i], now)
        times.append(time.perf_counter_ns() - t0)
    kept = len(stored_list(client, key))
    if kept != size:
        raise AssertionError(f"seed list should stay at {size} entries, holds {kept}")
    return common.median(times)


def ours_cost(settings: Settings, blocks: int) -> float:
    monitor = MetricsMonitor(settings)
    eps = common.endpoints()
    rts = common.response_times(1000)
    sts = common.statuses(1000)
    calls = [(eps[i % len(eps)], rts[i], sts[i]) for i in range(1000)]
    track = monitor.track_api_request
    per_call = []
    try:
        for _ in range(blocks + 1):
            t0 = time.perf_counter_ns()
            for ep, rt, st in calls:
                track(ep, rt, st)
            per_call.append((time.perf_counter_ns() - t0) / 1000)
        monitor.flush(timeout=60)
    finally:
        monitor.close()
    return common.median(per_call[1:])  # the first block starts the flusher


# -- concurrent writers ------------------------------------------------------------------------


def seed_writer(url: str, key: str, count: int, start: Any, results: Any) -> None:
    client = redis.Redis.from_url(url)
    rts = common.response_times(count)
    sts = common.statuses(count)
    start.wait(60)
    t0 = time.perf_counter()
    for i in range(count):
        seed_track(client, key, rts[i], sts[i], time.time())
    results.put(time.perf_counter() - t0)


def ours_writer(settings: Settings, count: int, start: Any, results: Any) -> None:
    monitor = MetricsMonitor(settings)
    rts = common.response_times(count)
    sts = common.statuses(count)
    start.wait(60)
    t0 = time.perf_counter()
    for i in range(count):
        monitor.track_api_request("/api/shared/", rts[i], sts[i])
    delivered = monitor.flush(timeout=60)
    results.put((time.perf_counter() - t0) if delivered else -1.0)


def concurrent(target: Any, args: tuple[Any, ...]) -> float:
    """Run ``target`` in PROCS processes released at once; the slowest one's seconds."""
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, results)) for _ in range(PROCS)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let them import; the event releases them together either way
    start.set()
    times: list[float] = []
    try:
        for _ in procs:
            times.append(float(results.get(timeout=300)))
    except queue.Empty:
        raise TimeoutError("a writer process did not finish within 300 s") from None
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    if min(times) < 0:
        raise RuntimeError("a writer could not flush its events")
    return max(times)


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("seed_baseline")
    quick = args.quick
    per_proc = 250 if quick else 2_000
    calls = {100: 200, 1_000: 50, 10_000: 10} if quick else {100: 2000, 1_000: 500, 10_000: 60}
    with common.redis_server() as url:
        client = common.client_for(url)
        settings = common.bench_settings(url, buffer_max=1_000_000)
        try:
            ours = ours_cost(settings, 5 if quick else 50)
            seed = {
                size: seed_cost(client, settings.key_prefix, size, calls[size]) for size in SIZES
            }
            shared = seed_key(settings.key_prefix, "/api/shared/")
            seed_s = concurrent(seed_writer, (url, shared, per_proc))
            seed_kept = len(stored_list(client, shared))
            common.delete_prefix(client, settings.key_prefix)
            ours_s = concurrent(ours_writer, (settings, per_proc))
            monitor = MetricsMonitor(settings)
            monitor.aggregate()
            summary = monitor.get_metrics_summary()
            monitor.close()
            ours_kept = summary["api"].get("/api/shared/", {}).get("total_requests", 0)
        finally:
            common.delete_prefix(client, settings.key_prefix)
            client.close()
    total = PROCS * per_proc
    report.check(ours_kept == total, f"MetricsMonitor counted {ours_kept:,} of {total:,}")
    common.print_table(
        "per-call cost, one thread (median)",
        ("design", "stored events", "per call", "seed / ours"),
        [("monitor_worker track_api_request", "-", common.fmt_ns(ours), "1x")]
        + [
            (
                "seed GET+pickle+SET",
                f"{size:,}",
                common.fmt_ns(seed[size]),
                f"{seed[size] / ours:,.0f}x",
            )
            for size in SIZES
        ],
    )
    common.print_table(
        f"{PROCS} processes x {per_proc:,} events on one endpoint at once",
        ("design", "events kept", "lost", "slowest writer s"),
        [
            (
                "seed read-modify-write",
                f"{seed_kept:,} of {total:,}",
                f"{100 * (total - seed_kept) / total:.1f} %",
                f"{seed_s:.2f}",
            ),
            (
                "monitor_worker",
                f"{ours_kept:,} of {total:,}",
                f"{100 * (total - ours_kept) / total:.1f} %",
                f"{ours_s:.2f}",
            ),
        ],
    )
    for size in SIZES:
        report.figure(
            f"seed call, {size:,} stored / ours",
            f"{seed[size] / ours:,.0f}x",
            f"(seed {common.fmt_ns(seed[size])})",
        )
    report.figure(f"seed kept of {total:,} ({PROCS} procs)", f"{seed_kept:,}")
    report.figure(
        f"ours counted of {total:,} ({PROCS} procs)",
        f"{ours_kept:,}",
        f"= {total:,}",
        ours_kept == total,
    )
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
