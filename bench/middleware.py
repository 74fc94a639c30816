"""What a request pays for monitoring, per framework: our integration beside no monitoring and
beside each peer (Django: django-prometheus; Flask: prometheus-flask-exporter; FastAPI:
prometheus-fastapi-instrumentator and starlette-exporter), on a trivial templated JSON view.

Django and Flask are driven through their test clients, ASGI apps by calling the app directly
from one event loop (FastAPI's TestClient adds a thread hop that drowns the difference).
Wall time: ``--rounds`` interleaved rounds of ``--requests`` requests per variant; for each
variant the median of per-round differences against no monitoring, and the difference of the
fastest rounds (the steadier figure on a noisy machine). CPU: process CPU time (every thread,
so our flusher thread's encoding and pushes count) per request in ``--cpu-rounds``
interleaved blocks of ``--cpu-requests`` requests, reported the same two ways. Goal: our added
cost (fastest rounds and blocks) at most 1/3 of every peer's, in wall time and in CPU.

    .venv/bin/python bench/middleware.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from collections.abc import Callable
from typing import Any

import _common as common

from monitor_worker.monitor import MetricsMonitor

Run = Callable[[int, int], None]  # (first request number, count)
IDS = 100  # the view is called with ids cycling over this many values


# -- Django -------------------------------------------------------------------------------------


def _django_variants(monitor: MetricsMonitor) -> dict[str, Run]:
    import django
    from django.conf import settings
    from django.http import JsonResponse
    from django.test import Client
    from django.test.utils import override_settings
    from django.urls import path

    from monitor_worker.integrations.django import MetricsMiddleware

    def user(request: Any, pk: int) -> JsonResponse:
        return JsonResponse({"id": pk})

    globals()["urlpatterns"] = [path("api/users/<int:pk>/", user)]

    class Ours(MetricsMiddleware):
        pass

    Ours.monitor = monitor
    globals()["Ours"] = Ours
    settings.configure(
        SECRET_KEY="bench",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()
    stacks = {
        "no monitoring": [],
        "monitor-worker": [f"{__name__}.Ours"],
        "django-prometheus": [
            "django_prometheus.middleware.PrometheusBeforeMiddleware",
            "django_prometheus.middleware.PrometheusAfterMiddleware",
        ],
    }
    variants: dict[str, Run] = {}
    for name, middleware in stacks.items():
        with override_settings(MIDDLEWARE=middleware):
            client = Client()
            client.handler.load_middleware()  # under these settings, now

        def run(first: int, count: int, get: Any = client.get) -> None:
            for i in range(first, first + count):
                get(f"/api/users/{i % IDS}/")

        variants[name] = run
    return variants


# -- Flask --------------------------------------------------------------------------------------


def _flask_variants(monitor: MetricsMonitor) -> dict[str, Run]:
    from flask import Flask
    from prometheus_flask_exporter import PrometheusMetrics

    from monitor_worker.integrations.flask import init_app

    def make() -> Flask:
        app = Flask(f"bench{id(object())}")

        @app.get("/api/users/<int:user_id>/")
        def user(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        return app

    bare, ours, peer = make(), make(), make()
    init_app(ours, monitor=monitor)
    PrometheusMetrics(peer)

    def runner(app: Flask, distinct: bool = False) -> Run:
        get = app.test_client().get

        def run(first: int, count: int) -> None:
            for i in range(first, first + count):
                # buffered: the body is read and closed, as a WSGI server does
                get(f"/api/users/{i if distinct else i % IDS}/", buffered=True)

        return run

    return {
        "no monitoring": runner(bare),
        "monitor-worker": runner(ours),
        "prometheus-flask-exporter": runner(peer),
        "prometheus-flask-exporter, every id new": runner(peer, distinct=True),
    }


# -- FastAPI ------------------------------------------------------------------------------------


def _fastapi_variants(monitor: MetricsMonitor) -> dict[str, Run]:
    from fastapi import FastAPI
    from prometheus_fastapi_instrumentator import Instrumentator
    from starlette_exporter import PrometheusMiddleware

    from monitor_worker.integrations.starlette import MetricsMiddleware

    def make() -> FastAPI:
        app = FastAPI()

        @app.get("/api/users/{user_id}/")
        async def user(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        return app

    bare, ours, instrumentator, exporter = make(), make(), make(), make()
    ours.add_middleware(MetricsMiddleware, monitor=monitor)
    Instrumentator().instrument(instrumentator)
    exporter.add_middleware(PrometheusMiddleware)
    loop = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def runner(app: FastAPI) -> Run:
        async def many(first: int, count: int) -> None:
            for i in range(first, first + count):
                path = f"/api/users/{i % IDS}/"
                scope = {
                    "type": "http",
                    "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "http_version": "1.1",
                    "method": "GET",
                    "scheme": "http",
                    "path": path,
                    "raw_path": path.encode(),
                    "root_path": "",
                    "query_string": b"",
                    "headers": [(b"host", b"bench")],
                    "client": ("127.0.0.1", 1),
                    "server": ("bench", 80),
                }
                await app(scope, receive, send)

        def run(first: int, count: int) -> None:
            loop.run_until_complete(many(first, count))

        return run

    return {
        "no monitoring": runner(bare),
        "monitor-worker": runner(ours),
        "prometheus-fastapi-instrumentator": runner(instrumentator),
        "starlette-exporter": runner(exporter),
    }


# -- measuring ----------------------------------------------------------------------------------


def _wall(variants: dict[str, Run], rounds: int, requests: int) -> dict[str, list[float]]:
    """Seconds per request of each variant in each round (variants interleaved, rotated)."""
    names = list(variants)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    done = 0
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            started = time.perf_counter()
            variants[name](done, requests)
            per_round[name].append((time.perf_counter() - started) / requests)
            done += requests
    return per_round


def _cpu(
    variants: dict[str, Run], monitor: MetricsMonitor, rounds: int, requests: int
) -> dict[str, list[float]]:
    """Process CPU seconds per request (every thread) of each variant in each round, variants
    interleaved and rotated; our buffer is flushed inside the measured block."""
    names = list(variants)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    done = 10**7
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            monitor.flush()
            started = time.process_time()
            variants[name](done, requests)
            monitor.flush()
            per_round[name].append((time.process_time() - started) / requests)
            done += requests
    return per_round


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def _measure(
    framework: str,
    variants: dict[str, Run],
    monitor: MetricsMonitor,
    args: argparse.Namespace,
    report: common.Report,
) -> int:
    """Measure, print the framework's table, add its figures; returns requests sent via ours."""
    for run in variants.values():  # warm up
        run(0, 200)
    wall = _wall(variants, args.rounds, args.requests)
    cpu = _cpu(variants, monitor, args.cpu_rounds, args.cpu_requests)
    base, cpu_base = wall["no monitoring"], cpu["no monitoring"]
    added_median: dict[str, float] = {}
    added_fastest: dict[str, float] = {}
    added_cpu: dict[str, float] = {}
    rows = []
    for name in variants:
        diffs = [v - b for v, b in zip(wall[name], base, strict=True)]
        cpu_diffs = [v - b for v, b in zip(cpu[name], cpu_base, strict=True)]
        added_median[name] = common.median(diffs)
        added_fastest[name] = min(wall[name]) - min(base)
        added_cpu[name] = min(cpu[name]) - min(cpu_base)
        bare = name == "no monitoring"
        rows.append(
            (
                name,
                _us(min(wall[name])),
                "" if bare else _us(added_median[name]),
                "" if bare else _us(added_fastest[name]),
                _us(min(cpu[name])),
                "" if bare else _us(common.median(cpu_diffs)),
                "" if bare else _us(added_cpu[name]),
            )
        )
    common.print_table(
        f"{framework}: per request ({args.rounds} rounds x {args.requests} requests; CPU: "
        f"{args.cpu_rounds} rounds x {args.cpu_requests})",
        (
            "variant",
            "wall, fastest round",
            "added, median of round diffs",
            "added, fastest rounds",
            "CPU, fastest block",
            "CPU added, median of block diffs",
            "CPU added, fastest blocks",
        ),
        rows,
    )
    ours_wall, ours_cpu = added_fastest["monitor-worker"], added_cpu["monitor-worker"]
    report.figure(f"{framework}: monitor-worker added, wall (fastest rounds)", _us(ours_wall))
    report.figure(f"{framework}: monitor-worker added, CPU", _us(ours_cpu))
    for name in variants:
        if name in ("no monitoring", "monitor-worker") or "every id new" in name:
            continue
        for kind, ours, peer in (
            ("wall", ours_wall, added_fastest[name]),
            ("CPU", ours_cpu, added_cpu[name]),
        ):
            ratio = ours / peer if peer > 0 else float("inf")
            report.figure(
                f"{framework}: ours / {name} added, {kind}",
                f"{ratio:.2f} ({_us(ours)} / {_us(peer)})",
                "≤ 0.33",
                ratio <= 1 / 3,
            )
    # requests sent through ours: warm-up, wall rounds, CPU blocks
    return 200 + args.rounds * args.requests + args.cpu_rounds * args.cpu_requests


def main() -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=15)
        parser.add_argument("--requests", type=int, default=1000)
        parser.add_argument("--cpu-rounds", type=int, default=5)
        parser.add_argument("--cpu-requests", type=int, default=20_000)
        parser.add_argument(
            "--only", choices=("django", "flask", "fastapi"), action="append", default=None
        )

    args = common.parse_args(__doc__ or "", extra)
    if args.quick:
        args.rounds, args.requests, args.cpu_rounds, args.cpu_requests = 5, 200, 1, 2_000
    os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")
    report = common.Report("middleware")
    frameworks = {
        "Django": _django_variants,
        "Flask": _flask_variants,
        "FastAPI": _fastapi_variants,
    }
    with common.redis_server() as url:
        settings = common.bench_settings(url)
        monitor = MetricsMonitor(settings)
        client = common.client_for(url)
        sent = 0
        try:
            for framework, make in frameworks.items():
                if args.only and framework.lower() not in args.only:
                    continue
                sent += _measure(framework, make(monitor), monitor, args, report)
            report.check(monitor.flush(timeout=30), "every tracked request was delivered")
            while monitor.aggregate().events:  # a summary reads at most 200,000 raw events
                pass
            api = monitor.get_metrics_summary()["api"]
            counted = sum(stats["total_requests"] for stats in api.values())
            report.check(counted == sent, f"requests counted {counted} == sent {sent}")
            print(f"\nendpoints recorded: {sorted(api)}; requests {counted:,} of {sent:,}")
        finally:
            monitor.close()
            common.delete_prefix(client, settings.key_prefix)
            client.close()
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
