"""Cost of each integration hook per call, next to the bare operation in the same run:

- a Celery task round trip (``add.delay(1, 2).get()``) through a solo worker, bare app vs
  ``instrument(app)`` (publish header, prerun, postrun, track);
- a SQLite ``SELECT 1`` through Django's cursor, without vs with the execute wrapper the app
  entry installs, and through SQLAlchemy, bare engine vs ``instrument_engine``;
- a local-memory cache ``get`` (a hit), bare vs counted.

Rounds interleave the variants, alternating which goes first (a noisy moment hits both); each
figure is the median per-call time over the rounds' blocks. The events tracked meanwhile
reach the private Valkey; at the end they are counted: a run that lost one fails.

    .venv/bin/python bench/hook_cost.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as common

from monitor_worker.monitor import MetricsMonitor

HERE = Path(__file__).resolve().parent


def per_call_ns(fn: Callable[[], Any], calls: int) -> float:
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(calls):
        fn()
    return (clock() - t0) / calls


def interleaved(
    variants: dict[str, Callable[[], Any]], rounds: int, calls: int
) -> dict[str, float]:
    """Median per-call ns of each variant over ``rounds`` interleaved blocks of ``calls``."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    for n in range(rounds):
        for name, fn in order if n % 2 == 0 else reversed(order):  # ABBA: no side goes first
            samples[name].append(per_call_ns(fn, calls))
    return {name: common.median(values) for name, values in samples.items()}


def django_sqlite(monitor: MetricsMonitor, rounds: int, calls: int) -> dict[str, float]:
    import django
    from django.conf import settings

    from monitor_worker.integrations.django_db import QueryTimer

    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    from django.db import connection

    cursor = connection.cursor()
    timer = QueryTimer("default", monitor)

    def bare() -> None:
        connection.execute_wrappers[:] = []
        cursor.execute("SELECT 1")

    def hooked() -> None:
        connection.execute_wrappers[:] = [timer]
        cursor.execute("SELECT 1")

    return interleaved({"bare": bare, "hooked": hooked}, rounds, calls)


def sqlalchemy_sqlite(
    monitor: MetricsMonitor, tmp: Path, rounds: int, calls: int
) -> dict[str, float]:
    from sqlalchemy import create_engine, text

    from monitor_worker.integrations.sqlalchemy import instrument_engine

    plain = create_engine(f"sqlite:///{tmp / 'bench.sqlite3'}")
    hooked = create_engine(f"sqlite:///{tmp / 'bench.sqlite3'}")
    instrument_engine(hooked, name="sqlalchemy", monitor=monitor)
    select = text("SELECT 1")
    with plain.connect() as a, hooked.connect() as b:
        return interleaved(
            {"bare": lambda: a.execute(select), "hooked": lambda: b.execute(select)}, rounds, calls
        )


def locmem_get(monitor: MetricsMonitor, rounds: int, calls: int) -> dict[str, float]:
    from django.core.cache.backends.locmem import LocMemCache

    from monitor_worker.integrations.django_cache import instrument_cache

    plain = LocMemCache("bench-plain", {})
    counted = LocMemCache("bench-counted", {})
    instrument_cache(counted, "locmem", monitor)
    plain.set("k", 1, None)
    counted.set("k", 1, None)
    return interleaved(
        {"bare": lambda: plain.get("k"), "hooked": lambda: counted.get("k")}, rounds, calls
    )


def celery_round_trip(url: str, prefix: str, rounds: int, calls: int) -> dict[str, float]:
    """Two solo workers, one per app (bare, instrumented), each in a process of its own."""
    import importlib

    workers = []
    apps: dict[str, Any] = {}
    try:
        for name, flag in (("bare", "0"), ("hooked", "1")):
            queue = f"bench-{name}-{uuid.uuid4().hex[:6]}"
            env = dict(
                os.environ,
                BENCH_BROKER_URL=url,
                BENCH_QUEUE=queue,
                BENCH_INSTRUMENT=flag,
                MONITOR_REDIS_URL=url,
                MONITOR_KEY_PREFIX=prefix,
                MONITOR_SHARDS="2",
                PYTHONPATH=str(HERE),
            )
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "_celery_host",
                        "worker",
                        "--pool=solo",
                        "-Q",
                        queue,
                        "--loglevel=WARNING",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    env=env,
                    cwd=HERE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            os.environ.update(BENCH_BROKER_URL=url, BENCH_QUEUE=queue, BENCH_INSTRUMENT=flag)
            sys.modules.pop("_celery_host", None)
            apps[name] = importlib.import_module("_celery_host")
        for module in apps.values():  # warm up: the workers are up once these return
            module.add.delay(1, 2).get(timeout=60)
        return interleaved(
            {name: (lambda m=m: m.add.delay(1, 2).get(timeout=30)) for name, m in apps.items()},
            rounds,
            calls,
        )
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(20)


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("hook_cost")
    rounds = 5 if args.quick else 21
    sys.path.insert(0, str(HERE))
    import tempfile

    with common.redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        settings = common.bench_settings(url, shards=2)
        monitor = MetricsMonitor(settings=settings)
        results = {
            "SQLite SELECT 1, Django cursor": django_sqlite(monitor, rounds, 2_000),
            "SQLite SELECT 1, SQLAlchemy": sqlalchemy_sqlite(monitor, Path(tmp), rounds, 1_000),
            "local-memory cache get (hit)": locmem_get(monitor, rounds, 5_000),
            "Celery task round trip (solo worker, Redis)": celery_round_trip(
                url, settings.key_prefix, rounds, 10 if args.quick else 40
            ),
        }
        rows = []
        for what, r in results.items():
            extra = r["hooked"] - r["bare"]
            rows.append(
                (what, common.fmt_ns(r["bare"]), common.fmt_ns(r["hooked"]),
                 common.fmt_ns(extra), f"{r['hooked'] / r['bare']:.2f}×")
            )  # fmt: skip
            report.figure(f"{what}: bare / hooked", f"{common.fmt_ns(r['bare'])} / "
                          f"{common.fmt_ns(r['hooked'])} (+{common.fmt_ns(extra)})")  # fmt: skip
        common.print_table(
            "per call, median of interleaved blocks",
            ("operation", "bare", "hooked", "added", "ratio"),
            rows,
        )
        assert monitor.flush(30)
        summary = MetricsMonitor(settings=settings).get_metrics_summary()
        db = summary["db"]
        queries = db.get("default", {}).get("queries", 0) + db.get("sqlalchemy", {}).get(
            "queries", 0
        )
        want_queries = rounds * (2_000 + 1_000)
        report.check(queries == want_queries, f"queries counted {queries} == {want_queries}")
        lookups = summary["cache"].get("locmem", {}).get("lookups", 0)
        report.check(lookups == rounds * 5_000, f"cache lookups counted {lookups}")
        runs = sum(t["runs"] for t in summary["tasks"].values())
        report.check(runs > 0, f"task runs counted ({runs})")
        common.client_for(url).close()
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
