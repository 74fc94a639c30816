"""``monitor-worker demo``: the embedded default plus synthetic traffic that trips the rules.

Within about a minute the error-rate rule fires on ``/api/content/``, the slow-response rule
on ``/api/accounts/login/`` and the payment rule; alerts go to the console from a real Celery
worker with beat (to ``SLACK_WEBHOOK_URL`` only with ``--slack``: synthetic alerts never reach
a real channel by accident). On a configured store (``MONITOR_REDIS_URL`` or
``CELERY_BROKER_URL`` set) it says once which one it writes its synthetic traffic into.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from .config import Settings, redact_url, state_dir
from .lifetime import child_preexec, sigterm_as_interrupt
from .monitor import MetricsMonitor
from .report import format_summary

# Short intervals so the demo shows results quickly.
DEMO_ENV = {
    "MONITOR_AGGREGATE_INTERVAL": "2",
    "MONITOR_CHECK_INTERVAL": "5",
    "MONITOR_DELIVER_INTERVAL": "2",
    "MONITOR_QUEUE_CHECK_INTERVAL": "10",
}
REASONS = ("Card declined", "Insufficient funds", "Expired card")


def synthetic_request(rng: random.Random) -> tuple[str, float, int]:
    """One request of the demo's traffic: healthy, erroring or slow, by endpoint."""
    endpoint = rng.choice(("/api/review/today/", "/api/content/", "/api/accounts/login/"))
    if endpoint == "/api/content/":
        return endpoint, rng.lognormvariate(-1.8, 0.4), 500 if rng.random() < 0.12 else 200
    if endpoint == "/api/accounts/login/":
        slow = rng.random() < 0.2
        return endpoint, rng.uniform(2.5, 3.5) if slow else rng.lognormvariate(-1.5, 0.3), 200
    return endpoint, rng.lognormvariate(-1.6, 0.4), 200


def run_demo(duration_s: float = 0.0, web_port: int | None = 8350, slack: bool = False) -> int:
    """Run until ``duration_s`` has passed (0: until Ctrl-C or SIGTERM), then stop everything
    it started; ``web_port`` None runs it without the dashboard; ``slack`` lets the worker post
    to ``SLACK_WEBHOOK_URL``. Killed outright, its server, worker and dashboard stop on their
    own."""
    from .embedded import EmbeddedRedis
    from .web import server as web

    server: EmbeddedRedis | None = None
    worker: subprocess.Popen[bytes] | None = None
    dashboard: subprocess.Popen[bytes] | None = None
    monitor: MetricsMonitor | None = None
    code = 0
    try:
        with sigterm_as_interrupt():
            settings = Settings.from_env()
            env = _demo_env(os.environ, slack)
            if not settings.redis_url_explicit and not settings.broker_url_explicit:
                server = EmbeddedRedis().start()
                env["MONITOR_REDIS_URL"] = env["CELERY_BROKER_URL"] = server.url
                sys.stdout.write(f"MONITOR_REDIS_URL={server.url}\n")
            else:
                sys.stdout.write(_configured_store_warning(settings))
            if not slack:
                sys.stdout.write("demo: alerts go to the console (--slack sends them to Slack)\n")
            elif not env.get("SLACK_WEBHOOK_URL"):
                sys.stdout.write("demo: SLACK_WEBHOOK_URL is not set; alerts go to the console\n")
            sys.stdout.flush()
            monitor = MetricsMonitor(settings=Settings.from_env(env))
            worker = _start_worker(env)
            dashboard = None if web_port is None else web.start_beside(web_port, env)
            code = _traffic(monitor, worker, duration_s)
    except KeyboardInterrupt:
        pass
    finally:
        # A second SIGTERM must not cut the cleanup short.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if monitor is not None:
                monitor.close()
            web.stop(dashboard)
            if worker is not None:
                worker.terminate()
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
            if server is not None:
                server.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
    return code


def _demo_env(environ: Mapping[str, str], slack: bool) -> dict[str, str]:
    """The environment of the demo's worker: short intervals, and no webhook unless ``slack``."""
    env = dict(environ, **DEMO_ENV)
    if not slack:
        env.pop("SLACK_WEBHOOK_URL", None)
    return env


def _configured_store_warning(settings: Settings) -> str:
    urls = [settings.redis_url]
    if settings.broker_url != settings.redis_url:
        urls.append(settings.broker_url)
    shown = " and ".join(redact_url(url) for url in urls)
    return (
        f"demo: WARNING: writing synthetic traffic into the configured store {shown} "
        "(unset MONITOR_REDIS_URL and CELERY_BROKER_URL for an embedded one)\n"
    )


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    schedule = state_dir() / "demo-celerybeat-schedule"
    # Made by the embedded server, but not there yet on a fresh machine with a configured store.
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "monitor_worker",
            "worker",
            "--beat",
            "--loglevel=WARNING",
            "--concurrency=1",
            "--schedule",
            str(schedule),
        ],
        env=env,
        start_new_session=True,
        # Killed outright, the demo takes its server down too; a warm shutdown of a worker
        # whose broker is gone can wait a long time, so the worker gets SIGKILL. Its pool
        # child and beat then stop on their own (monitor_worker.celery asks for that).
        preexec_fn=child_preexec(signal.SIGKILL),
    )


def _traffic(monitor: MetricsMonitor, worker: subprocess.Popen[bytes], duration_s: float) -> int:
    sys.stdout.write(
        "demo: synthetic traffic running; alerts appear within about a minute (Ctrl-C to stop)\n"
    )
    rng = random.Random()
    started = time.monotonic()
    next_table = started + 10
    next_payment = started + 2
    while not duration_s or time.monotonic() - started < duration_s:
        for _ in range(5):
            monitor.track_api_request(*synthetic_request(rng))
        if time.monotonic() >= next_payment:
            monitor.track_payment_failure(rng.choice(REASONS), rng.choice((9900, 29000)))
            next_payment += 2
        if time.monotonic() >= next_table:
            sys.stdout.write("\n" + format_summary(monitor.get_metrics_summary()))
            sys.stdout.flush()
            next_table += 15
        if worker.poll() is not None:
            sys.stderr.write("demo: the worker stopped\n")
            return 1
        time.sleep(0.1)  # pacing the synthetic traffic, ~50 requests per second
    return 0
