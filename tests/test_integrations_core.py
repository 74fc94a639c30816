"""The rules every integration shares (framework-free, table-tested): the path heuristic,
names, exclusions, statuses, timed bodies and fault handling."""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
from typing import Any

import pytest

from monitor_worker.config import Settings
from monitor_worker.errors import ConfigError
from monitor_worker.integrations import _core
from monitor_worker.integrations._core import (
    UNMATCHED,
    Recorder,
    Rules,
    TimedBody,
    clean_status,
    cut_name,
    is_disconnect,
    template_path,
)
from monitor_worker.monitor import MetricsMonitor

UUID = "123e4567-e89b-12d3-a456-426614174000"


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("/", "/"),
        ("/api/review/today/", "/api/review/today/"),
        ("/users/42/orders/9f1c0a2b3c4d5e6f7a8b9c0d1e2f30e0/", "/users/{int}/orders/{token}/"),
        ("/users/42", "/users/{int}"),
        ("/users/0042/", "/users/{int}/"),
        ("/items/" + UUID, "/items/{uuid}"),
        ("/items/" + UUID.upper() + "/x", "/items/{uuid}/x"),
        ("/items/123e4567-e89b-12d3-a456-42661417400", "/items/{token}"),  # not a UUID
        ("/blob/0123456789abcdef", "/blob/{token}"),  # 16 hex
        ("/blob/0123456789abcde", "/blob/0123456789abcde"),  # 15 hex: stays
        ("/blob/deadbeefdeadbeef", "/blob/{token}"),  # 16 hex letters
        ("/t/abcDEF123_-xyzXYZ789", "/t/{token}"),  # 20 chars, digit and letter
        ("/t/abcDEF123_-xyzXYZ78", "/t/abcDEF123_-xyzXYZ78"),  # 19 chars: stays
        ("/t/abcdefghijklmnopqrstuvwxyz", "/t/abcdefghijklmnopqrstuvwxyz"),  # no digit
        ("/t/____________________1", "/t/____________________1"),  # no letter
        ("/t/12345678901234567890123", "/t/{int}"),
        ("/reports/2024/summary.json", "/reports/{int}/summary.json"),
        ("/search?q=42", "/search"),
        ("/users/42/?page=3&id=9", "/users/{int}/"),
        ("//double//42", "//double//{int}"),
        ("/tél/42", "/tél/{int}"),
        ("/١٢٣/", "/١٢٣/"),  # non-ASCII digits are not {int}
        ("/a.b.c/v1.2", "/a.b.c/v1.2"),
    ],
)
def test_path_heuristic(path: str, want: str) -> None:
    assert template_path(path) == want


def _rules(**overrides: object) -> Rules:
    return Rules(Settings(**overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path", "skipped"),
    [
        ("GET", "/health", True),
        ("GET", "/healthz", True),
        ("GET", "/health/ready", True),
        ("GET", "/metrics", True),
        ("GET", "/metrics/", False),
        ("GET", "/static/app.css", True),
        ("GET", "/static/js/app.js", True),
        ("GET", "/static", False),
        ("GET", "/favicon.ico", True),
        ("GET", "/api/health", False),
        ("OPTIONS", "/api/x/", True),
        ("GET", "/api/x/", False),
        ("HEAD", "/api/x/", False),
        ("GET", "/HEALTH", False),
        ("GET", "/health\n/x", True),
    ],
)
def test_default_exclusions(method: str, path: str, skipped: bool) -> None:
    assert _rules().skip(method, path) is skipped


def test_exclusions_replace_the_default_and_empty_excludes_nothing() -> None:
    own = Rules(Settings.from_env({"MONITOR_EXCLUDE_PATHS": "/internal/*, /ping"}))
    assert own.skip("GET", "/internal/a/b") and own.skip("GET", "/ping")
    assert not own.skip("GET", "/health") and not own.skip("GET", "/metrics")
    nothing = Rules(Settings.from_env({"MONITOR_EXCLUDE_PATHS": ""}))
    assert not any(nothing.skip("GET", p) for p in ("/health", "/metrics", "/static/a"))
    assert nothing.skip("OPTIONS", "/x")  # OPTIONS is never recorded


def test_bad_exclusion_and_style_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="MONITOR_EXCLUDE_PATHS"):
        Settings.from_env({"MONITOR_EXCLUDE_PATHS": "health*"})
    with pytest.raises(ConfigError, match="MONITOR_ENDPOINT_STYLE"):
        Settings.from_env({"MONITOR_ENDPOINT_STYLE": "path"})
    with pytest.raises(ConfigError, match="MONITOR_TRACK_UNMATCHED"):
        Settings.from_env({"MONITOR_TRACK_UNMATCHED": "maybe"})


@pytest.mark.parametrize(
    ("settings", "method", "template", "status", "unmatched", "want"),
    [
        ({}, "GET", "/api/users/<int:pk>/", 200, (405,), "/api/users/<int:pk>/"),
        ({}, "GET", "/api/users/<int:pk>/", 404, (405,), "/api/users/<int:pk>/"),
        ({}, "GET", "/api/users/{int}/", 404, (404, 405), UNMATCHED),
        ({}, "POST", "/api/users/<int:pk>/", 405, (405,), UNMATCHED),
        ({}, "GET", None, 404, (405,), UNMATCHED),
        ({}, "GET", None, 500, (405,), UNMATCHED),
        ({"track_unmatched": False}, "GET", None, 404, (405,), None),
        ({"track_unmatched": False}, "PUT", "/x", 405, (405,), None),
        ({"endpoint_style": "method_route"}, "GET", "/x/<id>/", 200, (405,), "GET /x/<id>/"),
        ({"endpoint_style": "method_route"}, "GET", None, 404, (405,), UNMATCHED),
        ({}, "GET", "/" + "a" * 300, 200, (405,), "/" + "a" * 199),
        (
            {"endpoint_style": "method_route"},
            "DELETE",
            "/" + "b" * 300,
            200,
            (),
            "DELETE /" + "b" * 192,
        ),
    ],
)
def test_endpoint_names(
    settings: dict[str, object],
    method: str,
    template: str | None,
    status: int,
    unmatched: tuple[int, ...],
    want: str | None,
) -> None:
    assert _rules(**settings).endpoint(method, template, status, unmatched) == want


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("/x", "/x"),
        ("/" + "é" * 300, "/" + "é" * 199),
        ("/bad\udcff/x", "/bad\\udcff/x"),
        ("/<script>|{\n}", "/<script>|{\n}"),
    ],
)
def test_names_are_cut_and_made_valid_text(name: str, want: str) -> None:
    got = cut_name(name)
    assert got == want and len(got) <= 200
    got.encode("utf-8")


@pytest.mark.parametrize(
    ("status", "want"),
    [
        (200, 200),
        (499, 499),
        (599, 599),
        (600, 500),
        (99, 500),
        (None, 500),
        ("200", 500),
        (True, 500),
    ],
)
def test_statuses(status: object, want: int) -> None:
    assert clean_status(status) == want


class ClientDisconnect(Exception):
    """Named like Starlette's."""


class RequestAborted(Exception):
    """Named like Django's."""


@pytest.mark.parametrize(
    ("exc", "disconnect"),
    [
        (BrokenPipeError(), True),
        (ConnectionResetError(), True),
        (OSError(errno.EPIPE, "pipe"), True),
        (OSError(errno.ENOENT, "no file"), False),
        (FileNotFoundError(), False),
        (ClientDisconnect(), True),
        (RequestAborted(), True),
        (RuntimeError("boom"), False),
        (ValueError(), False),
    ],
)
def test_disconnects(exc: BaseException, disconnect: bool) -> None:
    assert is_disconnect(exc) is disconnect
    assert _core.status_of_exception(exc) == (499 if disconnect else 500)


def test_timed_body_finishes_once() -> None:
    seen: list[int | None] = []
    body = TimedBody([b"a", b"b"], seen.append)
    assert list(body) == [b"a", b"b"]
    body.close()
    assert seen == [None]  # exhausted: the response's own status, once

    seen.clear()
    body = TimedBody(iter([b"a", b"b"]), seen.append)
    assert next(iter(body)) == b"a"
    body.close()
    body.close()
    assert seen == [499]  # closed before the end: the client went away

    def failing() -> object:
        yield b"a"
        raise RuntimeError("mid-stream")

    seen.clear()
    body = TimedBody(failing(), seen.append)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="mid-stream"):
        list(body)
    body.close()
    assert seen == [500]


def test_a_fault_never_raises_and_is_logged_once_a_minute(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = MetricsMonitor(settings)
    recorder = Recorder(monitor)

    def broken(request: object) -> str | None:
        raise KeyError("route lookup failed")

    with caplog.at_level(logging.WARNING, logger="monitor_worker.integrations"):
        for _ in range(50):
            recorder.record("GET", broken, None, 200, 0.0)
    assert recorder.faults == 50
    assert caplog.text.count("request tracking failed") == 1
    recorder.record("GET", str, "/fine/", 200, _core.time.perf_counter())
    assert monitor.get_metrics_summary()["api"]["/fine/"]["total_requests"] == 1
    monitor.close()


def test_importing_the_package_imports_no_integration_or_framework() -> None:
    code = (
        "import sys\n"
        "import monitor_worker\n"
        "from monitor_worker import metrics_monitor\n"
        "bad = [m for m in sys.modules if m.startswith('monitor_worker.integrations')\n"
        "       or m.split('.')[0] in ('django', 'flask', 'starlette', 'fastapi', 'werkzeug')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_unmatched_dropped_when_not_tracked(settings: Settings) -> None:
    from monitor_worker.integrations import asgi

    monitor = MetricsMonitor(settings.with_overrides(track_unmatched=False))

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        status = 200 if scope["path"] == "/known/" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def nothing(message: object) -> None:
        pass

    async def run() -> None:
        middleware = asgi.MetricsMiddleware(app, monitor=monitor)
        for path in ("/known/", "/scan/1.php", "/scan/2.php"):
            scope = {"type": "http", "method": "GET", "path": path}
            await middleware(scope, None, nothing)  # type: ignore[arg-type]

    asyncio.run(run())
    try:
        assert set(monitor.get_metrics_summary()["api"]) == {"/known/"}
    finally:
        monitor.close()
