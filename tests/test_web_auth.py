"""Tokens, sessions and TLS: a real server with ``MONITOR_WEB_TOKENS`` and
``MONITOR_METRICS_TOKEN`` set, served over TLS with a throw-away certificate; and the pure
rules of ``web.auth`` table-tested."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from monitor_worker.config import Settings
from monitor_worker.errors import ConfigError
from monitor_worker.web import auth

from .helpers import self_signed
from .web_server import WebServer, env_for, module_settings

pytestmark = pytest.mark.timeout(120)

ALICE = "alice-token-0123456789"
BOB = "bob-token-9876543210xyz"
SCRAPER = "scraper-token-abcdef0123"
TOKENS = f"alice={ALICE},bob={BOB}"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed for a throw-away certificate")
    tmp = tmp_path_factory.mktemp("webtls")
    cert, key = tmp / "server.crt", tmp / "server.key"
    self_signed("127.0.0.1", cert, key)
    return cert, key


@pytest.fixture(scope="module")
def server(redis_url: str, tls_files: tuple[Path, Path]) -> Iterator[WebServer]:
    cert, key = tls_files
    with module_settings(redis_url) as settings:
        env = env_for(
            settings,
            MONITOR_WEB_TOKENS=TOKENS,
            MONITOR_METRICS_TOKEN=SCRAPER,
            MONITOR_WEB_ALLOWED_HOSTS="monitor.example:443,dash.example",
            MONITOR_WEB_CACHE_SECONDS="0",
        )
        args = ("--certfile", str(cert), "--keyfile", str(key))
        with WebServer(env, *args, tls=True) as running:
            yield running


@pytest.fixture
def http(tls_files: tuple[Path, Path]) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace our certificate
        session.verify = str(tls_files[0])
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_request_needs_a_token(http: requests.Session, server: WebServer) -> None:
    for path in ("api/v1/summary", "api/v1/session", "api/v1/openapi.json", "static/app.js"):
        response = http.get(server.url + path, timeout=10, allow_redirects=False)
        assert response.status_code in (401, 303), path
    page = http.get(server.url, timeout=10, allow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    login = http.get(server.url + "login", timeout=10)
    assert login.ok and 'name="token"' in login.text
    for wrong in ("", "alice", ALICE[:-1], ALICE + "x", SCRAPER, f"{ALICE} {BOB}"):
        response = http.get(server.url + "api/v1/summary", headers=bearer(wrong), timeout=10)
        assert response.status_code == 401, wrong
        assert response.json()["error"].startswith("a token is required")


def test_bearer_token_reads_and_writes_without_csrf(
    http: requests.Session, server: WebServer
) -> None:
    assert http.get(server.url + "api/v1/summary", headers=bearer(BOB), timeout=10).ok
    session = http.get(server.url + "api/v1/session", headers=bearer(BOB), timeout=10).json()
    assert session["user"] == "bob" and session["auth"] == "bearer"
    made = http.post(
        server.url + "api/v1/silences",
        json={"key": "payment_failures", "duration": "15m", "reason": "known"},
        headers=bearer(BOB),
        timeout=10,
    )
    assert made.status_code == 201 and made.json()["created_by"] == "bob"
    foreign = http.post(
        server.url + "api/v1/silences",
        json={"key": "x", "duration": "15m"},
        headers={**bearer(BOB), "Origin": "https://evil.example"},
        timeout=10,
    )
    assert foreign.status_code == 403
    gone = http.delete(
        server.url + "api/v1/silences/payment_failures", headers=bearer(BOB), timeout=10
    )
    assert gone.ok


def test_login_sets_a_strict_http_only_secure_cookie_and_csrf_applies(
    http: requests.Session, server: WebServer
) -> None:
    failed = http.post(
        server.url + "login", data={"token": "nope"}, timeout=10, allow_redirects=False
    )
    assert failed.status_code == 303 and failed.headers["location"] == "/login?failed=1"
    assert "set-cookie" not in failed.headers
    done = http.post(server.url + "login", data={"token": ALICE}, timeout=10, allow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/"
    cookie = done.headers["set-cookie"]
    for attribute in ("mw_session=alice.", "HttpOnly", "SameSite=strict", "Secure", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    assert ALICE not in cookie
    assert http.get(server.url, timeout=10).ok  # the page, with the cookie
    session = http.get(server.url + "api/v1/session", timeout=10).json()
    assert session["user"] == "alice" and session["auth"] == "cookie"
    body = {"key": "cookie-test", "duration": "1h"}
    refused = http.post(server.url + "api/v1/silences", json=body, timeout=10)
    assert refused.status_code == 403 and refused.json()["parameter"] == "x-csrf-token"
    headers = {"X-CSRF-Token": session["csrf_token"]}
    made = http.post(server.url + "api/v1/silences", json=body, headers=headers, timeout=10)
    assert made.status_code == 201 and made.json()["created_by"] == "alice"
    assert http.delete(server.url + "api/v1/silences/cookie-test", headers=headers, timeout=10).ok
    # a forged cookie (bob's name, alice's signature) is refused
    forged = http.cookies["mw_session"].replace("alice.", "bob.", 1)
    with requests.Session() as other:
        other.trust_env, other.verify = False, http.verify
        other.cookies.set("mw_session", forged)
        assert other.get(server.url + "api/v1/summary", timeout=10).status_code == 401
    out = http.post(server.url + "logout", headers=headers, timeout=10, allow_redirects=False)
    assert out.status_code == 303 and "mw_session=" in out.headers["set-cookie"]


def test_metrics_takes_only_the_metrics_token(http: requests.Session, server: WebServer) -> None:
    assert http.get(server.url + "metrics", timeout=10).status_code == 401
    assert http.get(server.url + "metrics", headers=bearer(ALICE), timeout=10).status_code == 401
    scraped = http.get(server.url + "metrics", headers=bearer(SCRAPER), timeout=10)
    assert scraped.ok and "# TYPE monitor_requests_total counter" in scraped.text
    assert (
        http.get(server.url + "api/v1/summary", headers=bearer(SCRAPER), timeout=10).status_code
        == 401
    )


def test_allowed_hosts(http: requests.Session, server: WebServer) -> None:
    for host, ok in (
        ("monitor.example", True),
        ("dash.example:8443", True),
        ("evil.example", False),
    ):
        headers = {**bearer(ALICE), "Host": host}
        response = http.get(server.url + "api/v1/health", headers=headers, timeout=10)
        assert response.status_code == (200 if ok else 400), host


# -- the rules, table-tested -------------------------------------------------------------------


def guard(**overrides: Any) -> auth.Guard:
    settings = Settings(web_tokens=(f"alice={ALICE}", f"bob={BOB}"), **overrides)
    return auth.Guard(settings, bound_host="127.0.0.1")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8350", True), ("localhost", True), ("[::1]:8350", True), ("Localhost:1", True),
        ("127.0.0.1", True), ("evil.example", False), ("127.0.0.1.evil.example", False),
        ("", False), (None, False), ("[::2]:80", False), ("0.0.0.0:8350", False),
    ],
)  # fmt: skip
def test_host_rule(host: str | None, allowed: bool) -> None:
    assert guard().host_allowed(host) is allowed


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "allowed"),
    [
        (None, "http", "127.0.0.1:8350", True),
        ("http://127.0.0.1:8350", "http", "127.0.0.1:8350", True),
        ("https://127.0.0.1:8350", "http", "127.0.0.1:8350", False),
        ("http://127.0.0.1:8351", "http", "127.0.0.1:8350", False),
        ("http://localhost:8350", "http", "127.0.0.1:8350", False),
        ("null", "http", "127.0.0.1:8350", False),
        ("", "http", "127.0.0.1:8350", False),
    ],
)
def test_origin_rule(origin: str | None, scheme: str, host: str, allowed: bool) -> None:
    assert auth.Guard.origin_allowed(origin, scheme, host) is allowed


def test_sessions_expire_and_die_with_their_token() -> None:
    g = guard()
    cookie = g.new_session("alice", now=1000.0)
    assert g.session_user(cookie, now=1000.0 + auth.SESSION_S - 1) == "alice"
    assert g.session_user(cookie, now=1000.0 + auth.SESSION_S + 1) is None
    name, expires, signature = cookie.rsplit(".", 2)
    assert g.session_user(f"{name}.{int(expires) + 3600}.{signature}", now=1000.0) is None
    rotated = auth.Guard(Settings(web_tokens=(f"alice={BOB}x",)), "127.0.0.1")
    assert rotated.session_user(cookie, now=1000.0) is None
    assert g.session_user("garbage", now=1000.0) is None


def test_csrf_tokens_are_bound_to_the_session() -> None:
    g = guard()
    one = auth.Identity("alice", "cookie", g.new_session("alice"))
    two = auth.Identity("alice", "cookie", g.new_session("alice", now=time.time() + 5))
    assert g.csrf_ok(one, g.csrf_token(one)) and not g.csrf_ok(two, g.csrf_token(one))
    assert not g.csrf_ok(one, None) and g.csrf_ok(auth.Identity("bob", "bearer"), None)
    assert auth.Guard(Settings(), "127.0.0.1").csrf_token(one) != g.csrf_token(one)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MONITOR_WEB_TOKENS", "alice"),
        ("MONITOR_WEB_TOKENS", "alice=short"),
        ("MONITOR_WEB_TOKENS", "a b=0123456789abcdefgh"),
        ("MONITOR_WEB_TOKENS", f"alice={ALICE},alice={BOB}"),
        ("MONITOR_WEB_TOKENS", f"alice={ALICE},bob={ALICE}"),
        ("MONITOR_METRICS_TOKEN", "short"),
        ("MONITOR_WEB_CACHE_SECONDS", "-1"),
        ("MONITOR_MAX_QUEUES", "0"),
    ],
)
def test_bad_web_settings_name_the_variable_and_hide_tokens(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable) as info:
        Settings.from_env({variable: value})
    assert ALICE not in str(info.value) and BOB not in str(info.value)


def test_tokens_never_shown_in_repr() -> None:
    settings = Settings(web_tokens=(f"alice={ALICE}",), metrics_token=SCRAPER)
    assert ALICE not in repr(settings) and SCRAPER not in repr(settings)
    assert "alice=***" in repr(settings)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.0.2.1", False),
     ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert auth.is_loopback(host) is loopback
