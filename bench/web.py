"""The dashboard server under load, and the page's time to draw in Chromium.

1,000 endpoints with a full hour of minute buckets (quick: every 4th minute) are tracked and
aggregated into a private Valkey; then ``monitor-worker web`` serves them and 20 concurrent
clients request ``/api/v1/summary``, ``/api/v1/series?endpoint=*`` and ``/metrics`` for 30 s
each (quick: 5 s), with ``wrk`` (Debian's package) when installed, else a Python client. Each
target runs twice, interleaved: with the shipped shared snapshot (``MONITOR_WEB_CACHE_SECONDS``
5) and with none (0: every request reads Redis). The peer is ``get_metrics_summary()`` called
in-process in the same run. Then Chromium (Debian's, through Playwright) loads the page until
every row and sparkline of the 1,000 endpoints is drawn (median of 5 loads), and times a click
on a sort header until the next frame (median of 5).

    .venv/bin/python bench/web.py [--quick]
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common as common
import requests

from monitor_worker.config import BUCKET_S, Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.windows import bucket_of, window_start

ENDPOINTS = 1_000
CLIENTS = 20
CHROMIUM = "/usr/bin/chromium"
TARGETS = (
    ("summary", "api/v1/summary"),
    ("series", "api/v1/series?endpoint=*"),
    ("metrics", "metrics"),
)


def seed(settings: Settings, every: int) -> int:
    monitor = MetricsMonitor(settings=settings)
    eps = common.endpoints(ENDPOINTS)
    rts = common.response_times(4096)
    sts = common.statuses(4096)
    now = time.time()
    first, last = window_start(now, settings.window_s), bucket_of(now)
    i = 0
    for bucket in range(last, first - 1, -every):
        ts = min(now, bucket * BUCKET_S + BUCKET_S / 2)
        for ep in eps:
            monitor.track_api_request(ep, rts[i & 4095], sts[i & 4095], timestamp=ts)
            i += 1
    assert monitor.flush(timeout=120)
    monitor.aggregate()
    monitor.close()
    return i


class Server:
    def __init__(self, settings: Settings, cache_s: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
        env.update(
            MONITOR_REDIS_URL=settings.redis_url,
            MONITOR_KEY_PREFIX=settings.key_prefix,
            MONITOR_SHARDS=str(settings.shards),
            MONITOR_MAX_ENDPOINTS=str(settings.max_endpoints),
            MONITOR_WEB_CACHE_SECONDS=cache_s,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor_worker.cli", "web", "--port", str(self.port)], env=env
        )
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "api/v1/session", timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


_WRK_LINE = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def load(url: str, seconds: int) -> dict[str, float]:
    """Median and p99 latency (s) and requests/s of CLIENTS concurrent clients on ``url``."""
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(CLIENTS), "-d", f"{seconds}s", "--latency",
             "--timeout", "10s", url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
        got = {q: float(v) * _UNIT_S[u] for q, v, u in _WRK_LINE.findall(out)}
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        assert errors is None, out
        return {"p50": got["50"], "p99": got["99"], "rps": rate}
    return _python_load(url, seconds)


def _python_load(url: str, seconds: int) -> dict[str, float]:
    times: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                response = session.get(url, timeout=30)
                elapsed = time.perf_counter() - t0
                assert response.ok, response.status_code
                with lock:
                    times.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "p50": common.median(times),
        "p99": common.percentile(times, 0.99),
        "rps": len(times) / seconds,
    }


def page_times(url: str, loads: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    draw: list[float] = []
    sort: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for _ in range(loads):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-loaded]", timeout=60_000)
            draw.append(time.perf_counter() - t0)
            drawn = page.eval_on_selector_all(
                "#endpoints tbody tr svg polyline",
                "ls => ls.filter(l => l.getAttribute('points')).length",
            )
            assert drawn == ENDPOINTS, drawn
            for key in ("p95_response_time", "error_rate"):
                sort.append(
                    page.evaluate(
                        """key => new Promise(done => {
                            const t0 = performance.now();
                            document.querySelector(`#endpoints th[data-sort="${key}"]`).click();
                            requestAnimationFrame(() => setTimeout(() =>
                                done((performance.now() - t0) / 1000), 0));
                        })""",
                        key,
                    )
                )
            page.close()
        browser.close()
    return {"draw": common.median(draw), "sort": common.median(sort)}


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("web")
    every, seconds, loads = (4, 5, 2) if args.quick else (1, 30, 5)
    with common.redis_server() as url:
        settings = common.bench_settings(url, max_endpoints=2000, buffer_max=1_000_000)
        client = common.client_for(url)
        servers: list[Server] = []
        try:
            events = seed(settings, every)
            monitor = MetricsMonitor(settings=settings)
            peer = []
            for _ in range(9):
                t0 = time.perf_counter()
                monitor.get_metrics_summary()
                peer.append(time.perf_counter() - t0)
            monitor.close()
            servers = [Server(settings, "5"), Server(settings, "0")]
            rows = []
            results: dict[tuple[str, str], dict[str, float]] = {}
            for name, path in TARGETS:
                for server, cache in zip(servers, ("5 s", "none"), strict=True):
                    got = results[name, cache] = load(server.url + path, seconds)
                    rows.append(
                        (name, cache, f"{got['p50'] * 1000:.1f}", f"{got['p99'] * 1000:.1f}",
                         f"{got['rps']:.0f}")
                    )  # fmt: skip
            common.print_table(
                f"{ENDPOINTS:,} endpoints, {events:,} events, {CLIENTS} clients x {seconds} s "
                f"({'wrk' if shutil.which('wrk') else 'Python client'})",
                ("request", "snapshot", "median ms", "p99 ms", "req/s"),
                rows,
                left=2,
            )
            page = page_times(servers[0].url, loads) if Path(CHROMIUM).exists() else None
        finally:
            for server in servers:
                server.stop()
            common.delete_prefix(client, settings.key_prefix)
            client.close()
    quick = args.quick
    summary, metrics = results["summary", "5 s"], results["metrics", "5 s"]
    report.figure(
        "get_metrics_summary() in-process (the peer), median",
        f"{common.median(peer) * 1000:.1f} ms",
    )
    report.figure(
        "GET summary, 20 clients, p99 (median)",
        f"{summary['p99'] * 1000:.0f} ms ({summary['p50'] * 1000:.1f} ms)",
        "p99 <= 250 ms",
        None if quick else summary["p99"] <= 0.25,
    )
    uncached = results["summary", "none"]
    report.figure(
        "GET summary, no snapshot, p99 (median)",
        f"{uncached['p99'] * 1000:.0f} ms ({uncached['p50'] * 1000:.0f} ms)",
    )
    series = results["series", "5 s"]
    report.figure(
        "GET series?endpoint=*, 20 clients, p99 (median)",
        f"{series['p99'] * 1000:.0f} ms ({series['p50'] * 1000:.0f} ms)",
    )
    report.figure(
        "GET /metrics, 20 clients, median (p99)",
        f"{metrics['p50'] * 1000:.1f} ms ({metrics['p99'] * 1000:.0f} ms)",
        "median <= 200 ms",
        None if quick else metrics["p50"] <= 0.2,
    )
    if page is None:
        print(f"no Chromium at {CHROMIUM}: the page was not timed")
    else:
        report.figure(
            "page: every row and sparkline of 1,000 endpoints drawn, median",
            f"{page['draw'] * 1000:.0f} ms",
            "<= 2 s",
            None if quick else page["draw"] <= 2.0,
        )
        report.figure(
            "page: sort 1,000 rows on a click, to the next frame, median",
            f"{page['sort'] * 1000:.0f} ms",
            "<= 200 ms",
            None if quick else page["sort"] <= 0.2,
        )
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
