"""A real Celery worker (prefork, 2 children) of a host app instrumented with
``instrument(app)``, on the real Redis as its broker: runs, failures, retries, runtime and
queue wait per task, flushed by the children as they exit, and the failure-rate alert."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from monitor_worker.config import Settings
from monitor_worker.integrations.celery import queue_wait
from monitor_worker.monitor import MetricsMonitor

from .helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.celery_tasks"


def _env(settings: Settings, queue: str, mark_prefix: str, pool: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
    env.update(
        MONITOR_REDIS_URL=settings.redis_url,
        MONITOR_KEY_PREFIX=settings.key_prefix,
        MONITOR_SHARDS=str(settings.shards),
        # nothing is flushed on a timer: what arrives was flushed by the exiting processes
        MONITOR_FLUSH_INTERVAL="3600",
        TEST_BROKER_URL=settings.redis_url,
        TEST_QUEUE=queue,
        TEST_MARK_URL=settings.redis_url,
        TEST_MARK_PREFIX=mark_prefix,
        PYTHONPATH=str(ROOT),
    )
    return env


class Worker:
    def __init__(self, env: dict[str, str], log: Path, pool: str, concurrency: int) -> None:
        argv = [
            sys.executable, "-m", "celery", "-A", APP, "worker", "--loglevel=INFO",
            f"--pool={pool}", f"--concurrency={concurrency}", "-Q", env["TEST_QUEUE"],
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=out)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), as a deployment stops a worker."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def host_app(settings: Settings) -> Iterator[tuple[Any, str, str]]:
    """The host app's module in this process (the publisher), pointed at the test broker."""
    from tests.apps import celery_tasks

    queue = f"hostapp-{uuid.uuid4().hex[:8]}"
    celery_tasks.app.conf.update(broker_url=settings.redis_url, task_default_queue=queue)
    yield celery_tasks, queue, f"{settings.key_prefix}marks:"
    celery_tasks.app.close()


def _attempts(client: redis.Redis, prefix: str) -> int:
    return int(client.get(f"{prefix}attempts") or 0)


@pytest.mark.timeout(90)
def test_prefork_worker_records_runs_failures_retries_and_queue_wait(
    settings: Settings, rclient: redis.Redis, tmp_path: Path, host_app: tuple[Any, str, str]
) -> None:
    tasks, queue, marks = host_app
    published = time.time()
    tasks.early.delay()  # published before any worker runs: it waits while one starts
    worker = Worker(_env(settings, queue, marks, "prefork"), tmp_path / "w.log", "prefork", 2)
    try:
        wait_for(lambda: _attempts(rclient, marks) >= 1, timeout=40)  # the worker is up
        for _ in range(50):
            tasks.ok.delay()
        for _ in range(10):
            tasks.fail.delay()
        for _ in range(5):
            tasks.retry_once.delay()
        for _ in range(3):
            tasks.ignored.delay()
        tasks.later.apply_async(countdown=3)
        # early 1, ok 50, fail 10, retry_once 2 x 5, ignored 3, later 1
        wait_for(lambda: _attempts(rclient, marks) == 75, timeout=40)
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.tail()
    monitor = MetricsMonitor(settings=settings)
    summary = wait_for(lambda: _complete(monitor), timeout=10)
    t = summary["tasks"]
    main = [f"{tasks.__name__}.{n}" for n in ("ok", "fail", "retry_once")]
    assert sum(t[n]["runs"] for n in main) == 65, t
    assert sum(t[n]["failures"] for n in main) == 10
    assert sum(t[n]["retries"] for n in main) == 5
    assert t[f"{tasks.__name__}.fail"]["failure_rate"] == 100.0
    assert t[f"{tasks.__name__}.fail"]["avg_runtime"] is not None  # failed runs have a runtime
    assert f"{tasks.__name__}.ignored" not in t
    early, later = t[f"{tasks.__name__}.early"], t[f"{tasks.__name__}.later"]
    # its wait is from its publishing to its start, seconds of worker start-up (a wait measured
    # from the worker receiving it would be about zero)
    waited = float(rclient.get(f"{marks}early_started") or 0) - published
    assert waited > 0.5, waited  # a worker process takes longer than that to start
    assert abs(early["avg_queue_wait"] - waited) <= 0.3, (early, waited)
    assert later["avg_queue_wait"] < 2.0, later  # the 3 s countdown is not waiting
    assert {v["queue"] for v in t.values()} == {queue}
    assert summary["task_queues"][queue]["tasks"] == 67
    report = monitor.check_alerts(deliver=False, inspect=False)
    fired = {f["key"] for f in report["fired"]}
    assert f"task_failure_rate:{tasks.__name__}.fail" in fired
    assert f"task_failure_rate:{tasks.__name__}.ok" not in fired


def _complete(monitor: MetricsMonitor) -> dict[str, Any] | None:
    summary = monitor.get_metrics_summary()
    runs = sum(t["runs"] + t["retries"] for t in summary["tasks"].values())
    return summary if runs >= 72 else None


@pytest.mark.parametrize(
    ("published", "eta", "started", "want"),
    [
        (100.0, None, 103.5, 3.5),
        (100.0, "1970-01-01T00:01:50+00:00", 111.0, 1.0),  # ETA 110: the countdown is no wait
        (100.0, "1970-01-01T00:01:50", 111.0, 1.0),  # a naive ETA is UTC
        (100.0, None, 99.0, 0.0),  # clocks apart: never below 0
        (None, None, 111.0, None),  # not stamped: no wait, not zero
        ("junk", None, 111.0, None),
        (100.0, "not a time", 101.0, 1.0),
    ],
)
def test_queue_wait(published: Any, eta: Any, started: float, want: float | None) -> None:
    assert queue_wait(started, published, eta) == want


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_threads_and_solo_pools(
    settings: Settings,
    rclient: redis.Redis,
    tmp_path: Path,
    host_app: tuple[Any, str, str],
    pool: str,
) -> None:
    tasks, queue, marks = host_app
    for _ in range(4):
        tasks.ok.delay()
    tasks.fail.delay()
    tasks.retry_once.delay()
    worker = Worker(_env(settings, queue, marks, pool), tmp_path / "w.log", pool, 2)
    try:
        wait_for(lambda: _attempts(rclient, marks) == 7, timeout=40)
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.tail()
    t = MetricsMonitor(settings=settings).get_metrics_summary()["tasks"]
    name = tasks.__name__
    assert (t[f"{name}.ok"]["runs"], t[f"{name}.fail"]["failures"]) == (4, 1)
    assert (t[f"{name}.retry_once"]["runs"], t[f"{name}.retry_once"]["retries"]) == (1, 1)
    assert t[f"{name}.ok"]["avg_queue_wait"] is not None
