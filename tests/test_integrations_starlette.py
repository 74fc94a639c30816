"""Starlette and FastAPI: the example app through an ASGI client and under a real uvicorn on
a loopback port; include_router and Mount prefixes, HTTPException, CORS preflights,
background tasks and client disconnects."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from examples.fastapi_app import create_app
from monitor_worker.config import Settings
from monitor_worker.integrations._core import UNMATCHED
from monitor_worker.integrations.starlette import MetricsMiddleware
from monitor_worker.monitor import MetricsMonitor

from .conftest import free_port
from .helpers import wait_for
from .integration_cases import CASES, expected, monitor, response_times, wait_counts

__all__ = ["monitor"]

ROOT = Path(__file__).parents[1]
USERS = "/api/users/{user_id}/"


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _fastapi(monitor: MetricsMonitor) -> FastAPI:
    """The example app with nested routers, mounts and a CORS middleware outside ours."""
    app = create_app(monitor)
    items = APIRouter()

    @items.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 418:
            raise HTTPException(status_code=418, detail="teapot")
        return {"id": item_id}

    deep = APIRouter()

    @deep.get("/notes/{note_id}")
    async def note(note_id: str) -> dict[str, str]:
        return {"id": note_id}

    items.include_router(deep, prefix="/deep")
    app.include_router(items, prefix="/v1")

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["name"])

    tenant = FastAPI()
    tenant.include_router(items, prefix="/r")
    app.mount("/t/{tenant}", tenant)
    app.mount("/s", Starlette(routes=[Mount("/m", routes=[Route("/x/{name}", plain)])]))

    @app.get("/slow-after")
    async def slow_after(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(asyncio.sleep, 0.5)
        return {"ok": True}

    app.add_middleware(CORSMiddleware, allow_origins=["https://example.org"], allow_methods=["*"])
    return app


def test_fastapi_table_routers_mounts_and_statuses(
    settings: Settings, monitor: MetricsMonitor
) -> None:
    app = _fastapi(monitor)

    async def run() -> None:
        async with _client(app) as client:
            for case in CASES:
                if case.path == "/api/boom/":
                    with pytest.raises(RuntimeError, match="boom"):  # reaches the caller
                        await client.get(case.path)
                    continue
                response = await client.request(case.method, case.path)
                if case.endpoint is not None:
                    assert response.status_code == case.status, case
            for path, status in [
                ("/v1/items/3", 200),
                ("/v1/items/418", 418),
                ("/v1/items/abc", 422),
                ("/v1/deep/notes/n1", 200),
                ("/t/acme/r/items/4", 200),
                ("/t/acme/r/deep/notes/n2", 200),
                ("/s/m/x/hello", 200),
            ]:
                assert (await client.get(path)).status_code == status, path
            preflight = await client.options(
                "/v1/items/3",
                headers={
                    "Origin": "https://example.org",
                    "Access-Control-Request-Method": "GET",
                },
            )
            assert preflight.status_code == 200

    asyncio.run(run())
    want = expected(USERS) | {
        "/v1/items/{item_id}": {200: 1, 418: 1, 422: 1},
        "/v1/deep/notes/{note_id}": {200: 1},
        "/t/{tenant}/r/items/{item_id}": {200: 1},
        "/t/{tenant}/r/deep/notes/{note_id}": {200: 1},
        "/s/m/x/{name}": {200: 1},
    }
    wait_counts(settings, want, monitor)


def test_stream_timed_to_last_chunk_background_tasks_excluded(
    settings: Settings, monitor: MetricsMonitor
) -> None:
    app = _fastapi(monitor)

    async def run() -> None:
        async with _client(app) as client:
            assert (await client.get("/api/stream/")).text == "chunk 0\nchunk 1\nchunk 2\n"
            assert (await client.get("/slow-after")).status_code == 200

    asyncio.run(run())
    times = response_times(monitor)
    assert times["/api/stream/"] >= 0.4
    assert times["/slow-after"] < 0.4  # the 0.5 s background task ran after the response


def test_starlette_without_fastapi(settings: Settings, monitor: MetricsMonitor) -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(
        routes=[
            Route("/hello/{name:int}", hello),
            Mount("/v2/{org}", routes=[Route("/hello/{name}", hello, methods=["GET"])]),
        ]
    )
    app.add_middleware(MetricsMiddleware, monitor=monitor)

    async def run() -> None:
        async with _client(app) as client:
            for path in ("/hello/1", "/v2/acme/hello/bob", "/v2/acme/nope"):
                await client.get(path)
            assert (await client.post("/v2/acme/hello/bob")).status_code == 405

    asyncio.run(run())
    wait_counts(
        settings,
        {
            "/hello/{name}": {200: 1},
            "/v2/{org}/hello/{name}": {200: 1},
            UNMATCHED: {404: 1, 405: 1},
        },
        monitor,
    )


# -- a real uvicorn on a loopback port ----------------------------------------------------------


@pytest.fixture(scope="module")
def uvicorn_server(redis_url: str) -> Iterator[tuple[int, Settings]]:
    settings = Settings(
        redis_url=redis_url, key_prefix=f"mwtest:{uuid.uuid4().hex[:12]}:", shards=4
    )
    port = free_port()
    env = dict(
        os.environ,
        MONITOR_REDIS_URL=redis_url,
        MONITOR_KEY_PREFIX=settings.key_prefix,
        MONITOR_SHARDS="4",
        MONITOR_FLUSH_INTERVAL="0.2",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=30, interval=0.2)
        yield port, settings
    finally:
        server.terminate()
        server.wait(30)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=settings.key_prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_uvicorn_table_stream_and_disconnect(uvicorn_server: tuple[int, Settings]) -> None:
    port, settings = uvicorn_server
    base = f"http://127.0.0.1:{port}"
    for case in CASES:  # a connection each: uvicorn closes one whose app raised
        response = httpx.request(case.method, base + case.path, timeout=10)
        if case.endpoint is not None:
            assert response.status_code == case.status, case
    assert httpx.get(base + "/api/stream/", timeout=10).text == "chunk 0\nchunk 1\nchunk 2\n"
    reader = MetricsMonitor(settings)
    try:
        stream = wait_for(lambda: reader.get_metrics_summary()["api"].get("/api/stream/"))
    finally:
        reader.close()
    assert stream["total_requests"] == 1 and stream["avg_response_time"] >= 0.4
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/stream/ HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        while b"chunk 0" not in received:
            received += sock.recv(4096)
    # the client is gone after the first chunk
    want = expected(USERS)
    want["/api/stream/"] = {200: 1, 499: 1}
    wait_counts(settings, want)
