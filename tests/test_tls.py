"""``rediss://`` (TLS) for the metrics store and for broker queue inspection, against Debian's
``redis-server`` (built with TLS) on a loopback TLS port with a throw-away certificate."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.queues import inspect_queues

from .conftest import free_port
from .helpers import self_signed as _self_signed
from .helpers import wait_for

PASSWORD = "tls-test-password"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server and openssl are needed for the TLS tests under CI")
        pytest.skip("Debian's redis-server (with TLS) or openssl is not installed")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "server.crt", tmp / "server.key"
    _self_signed("127.0.0.1", cert, key)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = _url(port, cert)

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return proc.poll() is not None  # stop polling if the server died

    try:
        wait_for(answers, timeout=20)
        assert proc.poll() is None, "redis-server exited (built without TLS?)"
        yield port, cert
    finally:
        proc.terminate()
        proc.wait(10)


def _url(port: int, cert: Path) -> str:
    return f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"


def test_metrics_store_over_tls(tls_server: tuple[int, Path], key_prefix: str) -> None:
    port, cert = tls_server
    settings = Settings(redis_url=_url(port, cert), key_prefix=key_prefix, shards=2)
    monitor = MetricsMonitor(settings=settings)
    for i in range(1_000):
        monitor.track_api_request("/tls/", 0.01 * (i % 7), 500 if i % 4 == 0 else 200)
    monitor.track_payment_failure("Card declined", 10)
    assert monitor.flush(10)
    assert monitor.aggregate().events == 1_001
    summary = monitor.get_metrics_summary()
    assert summary["api"]["/tls/"]["total_requests"] == 1_000
    assert summary["api"]["/tls/"]["error_count"] == 250
    assert summary["payments"]["failures_last_hour"] == 1
    monitor.close()


def test_plaintext_client_is_refused_and_wrong_ca_fails(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    with pytest.raises((redis.RedisError, OSError)):
        redis.Redis(port=port, password=PASSWORD, socket_timeout=2).ping()
    wrong = cert.parent / "other.crt"
    _self_signed("other", wrong, cert.parent / "other.key")
    with pytest.raises((redis.RedisError, OSError)):
        redis.Redis.from_url(_url(port, wrong), socket_timeout=2).ping()


def test_queue_inspection_over_tls(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    url = _url(port, cert).replace("ssl_cert_reqs=required", "ssl_cert_reqs=CERT_REQUIRED")
    client = redis.Redis.from_url(_url(port, cert))
    queue = f"tls-q-{time.time_ns()}"
    client.lpush(queue, *[b"{}"] * 5)
    try:
        got = inspect_queues(url, [queue])[queue]
        assert (got.length, got.exists) == (5, True)
    finally:
        client.delete(queue)
