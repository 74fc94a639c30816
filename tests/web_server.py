"""A real ``monitor-worker web`` process on a loopback port, and real traffic to show in it.

Used by the web test modules, one server per module::

    with WebServer(env_for(settings, MONITOR_WEB_CACHE_SECONDS="0")) as server:
        requests.get(server.url + "api/v1/health")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import redis

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.web import server

from .conftest import free_port

XSS_ENDPOINT = "<img src=x onerror=alert(1)>"
SLOW_ENDPOINT = "/api/slow/"
ERROR_ENDPOINT = "/api/broken/"
MEASURED_QUEUE = "emails"
TASK = "billing.charge"
XSS_METRIC = "<script>alert(3)</script>"


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a server process reading ``settings``' store and prefix."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_", "SLACK_"))
    }
    env.update(
        MONITOR_REDIS_URL=settings.redis_url,
        MONITOR_KEY_PREFIX=settings.key_prefix,
        MONITOR_SHARDS=str(settings.shards),
        **extra,
    )
    return env


class WebServer:
    """``monitor-worker web`` in a child process; ``url`` ends with ``/``."""

    def __init__(self, env: dict[str, str], *args: str, tls: bool = False) -> None:
        self.port = free_port()
        self.env = env
        self.args = args
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> WebServer:
        cmd = [sys.executable, "-m", "monitor_worker.cli", "web", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the web server exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("the web server did not listen within 30 s") from None
                time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.proc is not None
        server.stop(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextmanager
def module_settings(redis_url: str, **overrides: Any) -> Iterator[Settings]:
    """Settings with a private key prefix for one test module; its keys go afterwards."""
    prefix = f"mwtest:{uuid.uuid4().hex[:12]}:"
    settings = Settings(
        redis_url=redis_url,
        redis_url_explicit=True,
        broker_url=redis_url,
        key_prefix=prefix,
        shards=4,
        **overrides,
    )
    try:
        yield settings
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()


def seed_traffic(settings: Settings, *, endpoints: int = 6) -> dict[str, Any]:
    """Real tracked traffic: healthy endpoints, one slow, one erroring, one named like an
    XSS payload, payment failures, a measured queue; then one check fires and delivers the
    alerts (to the console: no webhook). Returns the summary after it."""
    monitor = MetricsMonitor(settings=settings)
    now = time.time()
    for i in range(endpoints):
        for k in range(30 + 10 * i):
            monitor.track_api_request(f"/api/ok/{i}/", 0.05 + 0.01 * i, 200, timestamp=now - k * 50)
    for k in range(40):
        monitor.track_api_request(SLOW_ENDPOINT, 3.0 + k / 100, 200, timestamp=now - k * 30)
        monitor.track_api_request(ERROR_ENDPOINT, 0.1, 500 if k % 2 else 200, timestamp=now - k)
        monitor.track_api_request(XSS_ENDPOINT, 0.2, 200, timestamp=now - k * 20)
    for reason in ("Card declined", "Insufficient funds", "<b>bold</b>"):
        for _ in range(5):
            monitor.track_payment_failure(reason, 1000)
    # the kinds beyond requests: below their thresholds (1 failure in 12 runs), so no alert
    for k in range(12):
        outcome = "f" if k == 0 else "s"
        monitor.track_task(
            TASK, outcome, runtime=0.2 + k / 100, queue_wait=1.0 + k, queue="billing"
        )
    monitor.track_task(TASK, "r", queue_wait=0.5, queue="billing")
    for k in range(20):
        monitor.track_query("default", 0.002 * (k + 1), ok=k != 0)
    for hit in [True] * 7 + [False] * 3:
        monitor.track_cache("sessions", hit)
    for value in (1.0, 2.0, 4.0, 8.0):
        monitor.track_metric("pdf.render_seconds", value)
    monitor.track_metric(XSS_METRIC, 1.0)
    monitor.track_event("email.sent", ok=True)
    monitor.track_event("email.sent", ok=False)
    assert monitor.flush(10)
    monitor.aggregate()
    for n, length in enumerate((10, 40, 90, 150)):
        monitor.check_celery_queue(MEASURED_QUEUE, length, now=now - 60 + 15 * n)
    report = monitor.check_alerts(inspect=False)  # the queue checks above fired the rest
    firing = [e["key"] for e in report["fired"] + report["throttled"]]
    assert "slow_response:" + SLOW_ENDPOINT in firing, report
    summary = monitor.get_metrics_summary()
    monitor.close()
    return summary
