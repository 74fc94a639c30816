"""History figures: archive throughput, Redis memory and PostgreSQL disk at the default
retention, and query times, for 100 endpoints with log-normal response times from 1 ms to
10 s and traffic every minute.

Throughput goes through the real pipeline (track, aggregate, then time ``archive()``).
Memory and disk fill each store with the default retention's worth of rows through the
store's own merge (minute snapshots for the minute retention, one snapshot per endpoint-hour
before it), then time ``get_history`` (medians of interleaved runs).

PostgreSQL: ``MONITOR_BENCH_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/test); a
throw-away schema is created and dropped. Without it the PostgreSQL rows are skipped.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import _common as common

from monitor_worker.config import Settings
from monitor_worker.history import HistoryStore
from monitor_worker.history.codec import Row, Snapshot
from monitor_worker.keys import shard_of
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.windows import bin_of

PG_URL = os.environ.get("MONITOR_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PER_MINUTE = 20  # requests per endpoint per minute
MU, SIGMA = math.log(0.1), 1.5  # log-normal: median 100 ms, 1 ms .. 10 s within ~3 sigma


def _value(rng: random.Random) -> float:
    return min(10.0, max(0.001, rng.lognormvariate(MU, SIGMA)))


def _bins_pool(size: int, per: int, seed: int) -> list[tuple[Row, dict[int, int]]]:
    """``size`` random samples of ``per`` requests: (row without bins, bins)."""
    rng = random.Random(seed)
    pool = []
    for _ in range(size):
        values = [_value(rng) for _ in range(per)]
        bins: dict[int, int] = {}
        for v in values:
            b = bin_of(v)
            bins[b] = bins.get(b, 0) + 1
        errors = sum(1 for _ in range(per) if rng.random() < 0.02)
        pool.append((Row(per, errors, sum(values)), bins))
    return pool


@contextlib.contextmanager
def pg_schema() -> Iterator[str | None]:
    try:
        import psycopg

        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        print(f"PostgreSQL at {PG_URL} not usable ({exc}); its figures are skipped")
        yield None
        return
    schema = f"mwbench_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def _settings(url: str, history_url: str) -> Settings:
    return common.bench_settings(url, history_url=history_url)


# -- archive throughput --------------------------------------------------------------------------


def archive_rate(url: str, history_url: str, minutes: int, endpoints: list[str]) -> float:
    """Endpoint-minutes archived per second: ``minutes`` of traffic tracked and aggregated,
    then one timed archive run."""
    settings = _settings(url, history_url)
    if history_url:
        from monitor_worker.history.pg_schema import migrate

        migrate(settings)
    monitor = MetricsMonitor(settings=settings)
    rng = random.Random(3)
    now = time.time()
    start = int(now // 60) * 60 - minutes * 60
    for m in range(minutes):
        for endpoint in endpoints:
            for _ in range(PER_MINUTE // 4):
                ts = start + m * 60 + rng.uniform(0, 59)
                monitor.track_api_request(endpoint, _value(rng), 200, timestamp=ts)
    assert monitor.flush(timeout=60)
    monitor.aggregate()
    t0 = time.perf_counter()
    result = monitor.archive(now=now + 60)
    elapsed = time.perf_counter() - t0
    rows = monitor.get_history(start, now, step="1m", now=now + 60)["api"]
    done = sum(len(r) for r in rows.values())
    if done != minutes * len(endpoints) or result.gaps:
        raise SystemExit(f"archive check failed: {done} endpoint-minutes, {result.gaps} gaps")
    monitor.history_store().close()
    common.delete_prefix(common.client_for(url), settings.key_prefix)
    monitor.close()
    return minutes * len(endpoints) / elapsed


# -- filling a store with the default retention ----------------------------------------------------


def fill(store: HistoryStore, endpoints: list[str], shards: int, now: float, quick: bool) -> int:
    """Write the default retention's worth of rows; returns endpoint-minutes written."""
    minute_pool = _bins_pool(500, PER_MINUTE, 1)
    hour_pool = _bins_pool(100, PER_MINUTE * 60, 2)
    rng = random.Random(5)
    minutes_s, hours_s = store.minutes_retention_s, store.hours_retention_s
    if quick:
        minutes_s, hours_s = 3 * 3600, 2 * 86400
    last_minute = int(now // 60) * 60 - 60
    first_minute = last_minute - int(minutes_s) + 60
    first_hour = (last_minute - int(hours_s)) // 3600 * 3600 + 3600
    by_shard = {}
    for e in endpoints:
        by_shard.setdefault(shard_of(e, shards), []).append(e)
    written = 0
    # hours before the minute retention: one snapshot per endpoint-hour (an hour of traffic),
    # a day of them per write
    last_hour = first_minute - first_minute % 3600
    for day in range(first_hour, last_hour, 86400):
        for src, names in by_shard.items():
            snaps: list[Snapshot] = []
            for hour in range(day, min(day + 86400, last_hour), 3600):
                for name in names:
                    row, bins = rng.choice(hour_pool)
                    snaps.append(("a", name, hour, Row(row.n, row.e, row.s, None, dict(bins))))
            store.write(src, snaps, now)
    # minutes of the minute retention, one hour per write and shard
    for hour in range(first_minute - first_minute % 3600, last_minute + 1, 3600):
        for src, names in by_shard.items():
            snaps = []
            for t in range(max(hour, first_minute), min(hour + 3600, last_minute + 60), 60):
                for name in names:
                    row, bins = rng.choice(minute_pool)
                    snaps.append(("a", name, t, Row(row.n, row.e, row.s, None, dict(bins))))
            written += len(snaps)
            store.write(src, snaps, now)
    store.expire(now)
    return written


def query_times(
    monitor: MetricsMonitor, endpoints: list[str], now: float, runs: int
) -> dict[str, float]:
    hours_s = monitor.history_store().hours_retention_s
    cases = {
        "1 endpoint, 24 h at 1m": dict(since=now - 86400, step="1m", endpoint=endpoints[7]),
        "100 endpoints, 24 h at 1h": dict(since=now - 86400, step="1h"),
        f"100 endpoints, {hours_s / 86400:g} d at 1d": dict(since=now - hours_s, step="1d"),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved
        for name, kwargs in cases.items():
            t0 = time.perf_counter()
            doc = monitor.get_history(now=now, **kwargs)  # type: ignore[arg-type]
            times[name].append(time.perf_counter() - t0)
            if not doc["api"]:
                raise SystemExit(f"query {name} returned nothing")
    return {name: common.median(v) * 1000 for name, v in times.items()}


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("history")
    endpoints = common.endpoints(100)
    runs = 3 if args.quick else 7
    with common.redis_server() as url, pg_schema() as pg:
        stores = {"Redis": ""} | ({"PostgreSQL": pg} if pg else {})
        # archive throughput: interleaved runs, fresh data each
        minutes = 5 if args.quick else 30
        rates: dict[str, list[float]] = {name: [] for name in stores}
        for _ in range(1 if args.quick else 3):
            for name, history_url in stores.items():
                rates[name].append(archive_rate(url, history_url, minutes, endpoints))
        for name, values in rates.items():
            report.figure(f"archive, {name}: endpoint-minutes/s", f"{common.median(values):,.0f}")
        client = common.client_for(url)
        for name, history_url in stores.items():
            settings = _settings(url, history_url)
            if history_url:
                from monitor_worker.history.pg_schema import migrate

                migrate(settings)
            monitor = MetricsMonitor(settings=settings)
            store = monitor.history_store()
            now = time.time()
            before = common.used_memory(client)
            t0 = time.perf_counter()
            written = fill(store, endpoints, settings.shards, now, args.quick)
            print(
                f"{name}: filled {written:,} endpoint-minutes in {time.perf_counter() - t0:.0f} s"
            )
            minutes_s, hours_s = store.minutes_retention_s, store.hours_retention_s
            span = f"{minutes_s / 86400:g} d of minutes, {hours_s / 86400:g} d of hours"
            if args.quick:
                span = "quick: 3 h of minutes, 2 d of hours"
            if history_url:
                size = _pg_size(store)
                report.figure(f"PostgreSQL disk, 100 endpoints ({span})", common.fmt_mb(size))
                report.figure("PostgreSQL disk per endpoint", f"{size / 100 / 1e3:,.0f} kB")
            else:
                used = common.used_memory(client) - before
                kinds = common.memory_by_kind(client, settings.key_prefix)
                history_bytes = sum(v for k, v in kinds.items() if not k.startswith("#"))
                ok = history_bytes <= 50e6 if not args.quick else None
                report.figure(
                    f"Redis memory, 100 endpoints ({span})",
                    f"{common.fmt_mb(history_bytes)} (used_memory +{common.fmt_mb(used)})",
                    "<= 50 MB",
                    ok,
                )
                report.figure("Redis memory per endpoint", f"{history_bytes / 100 / 1e3:,.0f} kB")
            for case, ms in query_times(monitor, endpoints, now, runs).items():
                goal = 100 if "1m" in case else 200 if "1h" in case else 500
                report.figure(f"{name}: {case}", f"{ms:.1f} ms", f"<= {goal} ms", ms <= goal)
            store.close()
            monitor.close()
            common.delete_prefix(client, settings.key_prefix)
    return report.finish(args)


def _pg_size(store: Any) -> int:
    row = (
        store._db()
        .execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        )
        .fetchone()
    )
    return int(row[0])


if __name__ == "__main__":
    sys.exit(main())
