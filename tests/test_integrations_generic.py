"""The generic WSGI and ASGI middlewares: the example apps through a WSGI test client and an
ASGI client, the path heuristic end to end, and hostile input (many raw paths, odd bytes)."""

from __future__ import annotations

import asyncio
import logging
import string
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from examples import asgi_app, wsgi_app
from monitor_worker.config import Settings
from monitor_worker.integrations import asgi, wsgi
from monitor_worker.integrations._core import UNMATCHED
from monitor_worker.monitor import MetricsMonitor

from .integration_cases import CASES, expected, monitor, response_times, wait_counts

__all__ = ["monitor"]

USERS = "/api/users/{int}/"


def _get(client: Client, path: str, method: str = "GET") -> int:
    response = client.open(path, method=method)
    response.get_data()
    response.close()
    return response.status_code


def _ok(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_wsgi_example_table(settings: Settings, monitor: MetricsMonitor) -> None:
    client = Client(wsgi.MetricsMiddleware(wsgi_app.app, monitor=monitor))
    for case in CASES:
        if case.path == "/api/boom/":
            with pytest.raises(RuntimeError, match="boom"):  # reaches the caller unchanged
                client.get(case.path)
            continue
        status = _get(client, case.path, case.method)
        if case.endpoint is not None:
            assert status == case.status, case
    wait_counts(settings, expected(USERS), monitor)


def test_wsgi_stream_timed_to_the_end_and_close_before_end_is_499(
    settings: Settings, monitor: MetricsMonitor
) -> None:
    client = Client(wsgi.MetricsMiddleware(wsgi_app.app, monitor=monitor))
    assert _get(client, "/api/stream/") == 200
    assert response_times(monitor)["/api/stream/"] >= 0.4
    response = client.get("/api/stream/", buffered=False)
    assert next(iter(response.response)) == b"chunk 0\n"
    response.close()
    wait_counts(settings, {"/api/stream/": {200: 1, 499: 1}}, monitor)


def test_wsgi_endpoint_callable(settings: Settings, monitor: MetricsMonitor) -> None:
    app = wsgi.MetricsMiddleware(
        _ok, lambda environ: environ["PATH_INFO"].split("/")[1] or None, monitor=monitor
    )
    client = Client(app)
    for path in ("/alpha/1", "/alpha/2", "/beta", "/"):
        assert _get(client, path) == 200
    wait_counts(settings, {"alpha": {200: 2}, "beta": {200: 1}, UNMATCHED: {200: 1}}, monitor)


def _asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_asgi_example_table(settings: Settings, monitor: MetricsMonitor) -> None:
    async def run() -> None:
        async with _asgi_client(asgi.MetricsMiddleware(asgi_app.app, monitor=monitor)) as client:
            for case in CASES:
                if case.path == "/api/boom/":
                    with pytest.raises(RuntimeError, match="boom"):
                        await client.get(case.path)
                    continue
                response = await client.request(case.method, case.path)
                if case.endpoint is not None:
                    assert response.status_code == case.status, case
            assert (await client.get("/api/stream/")).text == "chunk 0\nchunk 1\nchunk 2\n"

    asyncio.run(run())
    assert response_times(monitor)["/api/stream/"] >= 0.4
    want = expected(USERS)
    want["/api/stream/"] = {200: 1}
    wait_counts(settings, want, monitor)


def _drive(app: Any, path: str, messages: list[dict[str, Any]], fail_send: bool = False) -> None:
    """Play the server: feed ``messages`` to receive, collect what the app sends."""

    async def run() -> None:
        inbox = list(messages)

        async def receive() -> dict[str, Any]:
            if inbox:
                return inbox.pop(0)
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        sent = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal sent
            sent += 1
            if fail_send and message["type"] == "http.response.body" and sent > 2:
                raise BrokenPipeError("client went away")

        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        await app(scope, receive, send)

    asyncio.run(run())


def test_asgi_disconnects_are_499(settings: Settings, monitor: MetricsMonitor) -> None:
    app = asgi.MetricsMiddleware(asgi_app.app, monitor=monitor)
    with pytest.raises(BrokenPipeError):  # the server's send fails mid-stream
        _drive(app, "/api/stream/", [], fail_send=True)

    async def stops_on_disconnect(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        assert (await receive())["type"] == "http.disconnect"

    _drive(
        asgi.MetricsMiddleware(stops_on_disconnect, monitor=monitor),
        "/gone/",
        [{"type": "http.disconnect"}],
    )
    wait_counts(settings, {"/api/stream/": {499: 1}, "/gone/": {499: 1}}, monitor)


def test_websocket_and_lifespan_pass_through(monitor: MetricsMonitor) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = asgi.MetricsMiddleware(app, monitor=monitor)

    async def run() -> None:
        for kind in ("websocket", "lifespan"):
            await middleware({"type": kind, "path": "/ws"}, None, None)  # type: ignore[arg-type]

    asyncio.run(run())
    assert seen == ["websocket", "lifespan"]
    assert monitor.get_metrics_summary()["api"] == {}


def _names(count: int) -> list[str]:
    """``count`` distinct letter-only segments (the heuristic keeps them as they are)."""
    letters = string.ascii_lowercase
    return [
        letters[i // 676 % 26] + letters[i // 26 % 26] + letters[i % 26] + "x" for i in range(count)
    ]


def test_10000_distinct_raw_paths_stay_bounded(settings: Settings) -> None:
    capped = settings.with_overrides(max_endpoints=50)
    tracked = MetricsMonitor(capped)
    try:
        app = wsgi.MetricsMiddleware(_ok, monitor=tracked)
        for name in _names(10_000):
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/probe/{name}/{name}.php"}
            body = app(environ, lambda status, headers, exc_info=None: None)
            list(body)
        tracked.flush()
        summary = tracked.get_metrics_summary()
    finally:
        tracked.close()
    assert len(summary["api"]) <= capped.max_endpoints + 1
    assert sum(s["total_requests"] for s in summary["api"].values()) == 10_000
    assert summary["endpoints_folded"] > 0


HOSTILE = [
    "/x/<script>alert(1)</script>",
    "/a{b}|c|d{{",
    "/line\nbreak\r\n/x",
    "/nul\x00byte",
    "/%E2%82%AC/%00/%ff",
    "/caf\xc3\xa9/\xff\xfe",  # WSGI carries raw bytes as latin-1: UTF-8, then invalid bytes
    "/" + "long-" * 2048,  # 10 kB
    "/\\back\\slash",
]


def test_hostile_paths_are_recorded_safely(settings: Settings, monitor: MetricsMonitor) -> None:
    app = wsgi.MetricsMiddleware(_ok, monitor=monitor)
    for path in HOSTILE:
        assert list(app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda *a: None)) == [b"ok"]

    async def run() -> None:
        async with _asgi_client(asgi.MetricsMiddleware(_asgi_ok, monitor=monitor)) as client:
            assert (await client.get("/" + "é" * 5000)).status_code == 200

    asyncio.run(run())
    api = monitor.get_metrics_summary()["api"]
    want = {
        "/x/<script>alert(1)</script>",
        "/a{b}|c|d{{",
        "/line\nbreak\r\n/x",
        "/nul\x00byte",
        "/%E2%82%AC/%00/%ff",
        "/café/\ufffd\ufffd",
        ("/" + "long-" * 2048)[:200],
        "/\\back\\slash",
        ("/" + "é" * 5000)[:200],  # through ASGI (sent percent-encoded, given decoded)
    }
    assert set(api) == want
    assert all(len(name) <= 200 for name in api)
    assert sum(s["total_requests"] for s in api.values()) == len(HOSTILE) + 1


async def _asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_fault_in_the_middleware_never_reaches_the_request(
    monitor: MetricsMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(environ: Any) -> str | None:
        raise LookupError("the route table is gone")

    client = Client(wsgi.MetricsMiddleware(_ok, broken, monitor=monitor))
    with caplog.at_level(logging.WARNING, logger="monitor_worker.integrations"):
        assert all(_get(client, f"/x/{i}") == 200 for i in range(20))
    assert caplog.text.count("request tracking failed") == 1
    assert "LookupError" in caplog.text
    assert monitor.get_metrics_summary()["api"] == {}
