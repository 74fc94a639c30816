"""Django: the example project's routes and more, through the test client (WSGI), through
the real ASGI handler with an ASGI client, and under a real gunicorn with 4 workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import django
import httpx
import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings as django_settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.test import Client

from monitor_worker.config import Settings
from monitor_worker.integrations._core import UNMATCHED
from monitor_worker.monitor import MetricsMonitor

from . import django_site
from .conftest import free_port
from .helpers import wait_for
from .integration_cases import CASES, expected, monitor, response_times, wait_counts

if not django_settings.configured:
    django_settings.configure(**django_site.SETTINGS)
    django.setup()

__all__ = ["monitor"]

ROOT = Path(__file__).parents[1]
USERS = "/api/users/<int:pk>/"
EXTRA = {
    "/v1/items/5/forbidden/": ("/v1/items/<int:pk>/forbidden/", 403),
    "/v1/items/5/": ("/v1/items/<int:pk>/", 404),
    "/r/2024/": ("/r/(?P<year>[0-9]{4})/", 200),
    "/legacy/year/1999/": ("/legacy/year/(?P<year>[0-9]{4})/", 200),
}


@pytest.fixture
def tracked(monitor: MetricsMonitor) -> Iterator[MetricsMonitor]:
    """The test project's middleware records into ``monitor`` (for handlers made now)."""
    django_site.Middleware.monitor = monitor
    yield monitor
    django_site.Middleware.monitor = None


def _want_extra() -> dict[str, dict[int, int]]:
    return {name: {status: 1} for name, status in EXTRA.values()}


def test_wsgi_table_includes_re_paths_and_exceptions(
    settings: Settings, tracked: MetricsMonitor
) -> None:
    client = Client(raise_request_exception=True)
    for case in CASES:
        if case.path == "/api/boom/":
            with pytest.raises(RuntimeError, match="boom"):  # reaches the caller unchanged
                client.get(case.path)
            continue
        response = client.generic(case.method, case.path)
        if case.endpoint is not None:
            assert response.status_code == case.status, case
    for path, (_, status) in EXTRA.items():
        assert client.get(path).status_code == status, path
    with pytest.raises(RequestAborted):
        client.get("/aborted/")
    want = expected(USERS) | _want_extra() | {"/aborted/": {499: 1}}
    wait_counts(settings, want, tracked)


def test_wsgi_stream_timed_to_the_end_and_closed_early_is_499(
    settings: Settings, tracked: MetricsMonitor
) -> None:
    client = Client()
    response = client.get("/api/stream/")
    assert b"".join(response.streaming_content) == b"chunk 0\nchunk 1\nchunk 2\n"  # type: ignore[attr-defined]
    assert response_times(tracked)["/api/stream/"] >= 0.4
    response = client.get("/api/stream/")
    assert next(iter(response.streaming_content)) == b"chunk 0\n"  # type: ignore[attr-defined]
    response.close()  # the server stops: the client went away
    wait_counts(settings, {"/api/stream/": {200: 1, 499: 1}}, tracked)


def test_asgi_table_without_thread_hop(settings: Settings, tracked: MetricsMonitor) -> None:
    handler = ASGIHandler()
    assert iscoroutinefunction(handler._middleware_chain)  # no sync adapter around ours

    async def run() -> None:
        transport = httpx.ASGITransport(app=handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for case in CASES:
                response = await client.request(case.method, case.path)
                if case.endpoint is not None:
                    assert response.status_code == case.status, case
            for path, (_, status) in EXTRA.items():
                assert (await client.get(path)).status_code == status, path
            stream = await client.get("/api/stream/")
            assert stream.text == "chunk 0\nchunk 1\nchunk 2\n"

    asyncio.run(run())
    assert response_times(tracked)["/api/stream/"] >= 0.4
    wait_counts(settings, expected(USERS) | _want_extra() | {"/api/stream/": {200: 1}}, tracked)


def test_asgi_disconnect_mid_stream_is_499(settings: Settings, tracked: MetricsMonitor) -> None:
    handler = ASGIHandler()

    async def run() -> None:
        body_sent = asyncio.Event()
        first_chunk = asyncio.Event()
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                first_chunk.set()
            if message["type"] == "http.response.body" and not message.get("more_body"):
                body_sent.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "path": "/api/stream/",
            "raw_path": b"/api/stream/",
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
        }
        await asyncio.wait_for(handler(scope, receive, send), 10)
        assert not body_sent.is_set()

    asyncio.run(run())
    wait_counts(settings, {"/api/stream/": {499: 1}}, tracked)


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_gunicorn_4_workers_2000_requests_counted_exactly(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = dict(
        os.environ,
        MONITOR_REDIS_URL=settings.redis_url,
        MONITOR_KEY_PREFIX=settings.key_prefix,
        MONITOR_SHARDS=str(settings.shards),
        DJANGO_SETTINGS_MODULE="examples.django_app.settings",
        TZ="UTC",
    )
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "examples.django_app.wsgi",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def up() -> bool:
            try:
                return _get(port, "/health") == 200
            except OSError:
                return False

        wait_for(up, timeout=30, interval=0.2)
        paths = (
            ["/api/review/today/"] * 1000
            + [f"/api/users/{i}/" for i in range(600)]
            + ["/api/boom/"] * 200
            + [f"/scan/{i}.php" for i in range(200)]
        )
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda p: _get(port, p), paths))
        assert statuses.count(200) == 1600 and statuses.count(500) == 200
        assert statuses.count(404) == 200
        want = {
            "/api/review/today/": {200: 1000},
            USERS: {200: 600},
            "/api/boom/": {500: 200},
            UNMATCHED: {404: 200},
        }
        wait_counts(settings, want)  # each worker flushes within its flush interval
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        log.close()
    # Django sets the process time zone from TIME_ZONE (default America/Chicago): the example
    # says UTC, so the workers' lines (after Django loaded) carry the same offset as the master's
    offsets = set(
        re.findall(
            r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ([+-]\d{4})\]",
            (tmp_path / "gunicorn.log").read_text(),
            re.M,
        )
    )
    assert offsets == {"+0000"}, offsets
