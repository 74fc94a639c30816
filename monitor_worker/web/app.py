"""The dashboard's ASGI application: the page, the JSON API, ``/metrics``, and the security
rules of ``auth.py`` applied to every request by one pure ASGI middleware.

Usage::

    app = create_app(settings, bound_host="127.0.0.1")    # serve with uvicorn (server.py)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import throttle
from ..config import Settings
from ..errors import MonitorError
from ..events import MAX_NAME_LEN
from ..monitor import MetricsMonitor
from ..store import REDIS_ERRORS as REDIS_FAULTS
from ..store import describe_error
from . import auth, openapi
from .exposition import METRICS_VIEWS, metrics_registry
from .views import Views

log = logging.getLogger("monitor_worker.web")

API = "/api/v1"
BODY_MAX = 16_384
MAX_SERIES_ENDPOINTS = 1_000
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make form posts send Origin: null
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
}
# the page's files, shipped as package data (no build step)
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_PUBLIC_PATHS = frozenset({"/login", "/static/login.js", "/static/app.css", "/static/favicon.svg"})


_HISTORY_PARAMETERS = ("since", "until", "step", "endpoint")


class BadParameter(ValueError):
    """A request parameter is wrong: answered 400 naming it."""

    def __init__(self, parameter: str | None, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def error(status: int, message: str, parameter: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "parameter": parameter}, status_code=status)


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


# -- the security middleware ---------------------------------------------------------------------


class Security:
    """Host and Origin checks, authentication, CSRF and security headers, in that order.

    A pure ASGI middleware: it wraps ``send`` to add headers and answers refusals itself, so a
    refused request never reaches a route.
    """

    def __init__(self, app: ASGIApp, guard: auth.Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)

    def _refusal(self, scope: Scope) -> Response | None:
        guard = self.guard
        headers = Headers(scope=scope)
        host = headers.get("host")
        path, method = scope["path"], scope["method"]
        if not guard.host_allowed(host):
            return error(400, "the Host header does not name this server", "Host")
        if not guard.origin_allowed(headers.get("origin"), scope["scheme"], host):
            return error(403, "cross-origin requests are refused", "Origin")
        if path in _PUBLIC_PATHS:
            return None
        authorization = headers.get("authorization")
        cookie = _cookie(headers.get("cookie"), auth.SESSION_COOKIE)
        if path == "/metrics":
            if guard.metrics_allowed(authorization, cookie):
                return None
            return error(401, "a bearer token is required", "Authorization")
        who = guard.identify(authorization, cookie)
        if who is None:
            if method == "GET" and not path.startswith(API):
                return RedirectResponse("/login", status_code=303)
            return error(401, "a token is required (Authorization: Bearer, or log in)", None)
        scope.setdefault("state", {})["identity"] = who
        if method not in ("GET", "HEAD", "OPTIONS") and not guard.csrf_ok(
            who, headers.get(auth.CSRF_HEADER)
        ):
            return error(403, "a valid X-CSRF-Token header is required", auth.CSRF_HEADER)
        return None


def _cookie(header: str | None, name: str) -> str | None:
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


# -- routes ----------------------------------------------------------------------------------


class Handlers:
    """The routes of one application (one store, one guard)."""

    def __init__(self, settings: Settings, guard: auth.Guard, monitor: MetricsMonitor) -> None:
        self.settings = settings
        self.guard = guard
        self.views = Views(monitor)
        self.registry = metrics_registry(self.views)
        self.openapi = json.dumps(openapi.document()).encode()

    def routes(self) -> list[Route]:
        api = [
            ("/summary", self.summary, ["GET"]),
            ("/series", self.series, ["GET"]),
            ("/alerts", self.view("alerts"), ["GET"]),
            ("/silences", self.view("silences"), ["GET"]),
            ("/silences", self.add_silence, ["POST"]),
            ("/silences/{key:path}", self.remove_silence, ["DELETE"]),
            ("/queues", self.queues, ["GET"]),
            ("/health", self.view("health"), ["GET"]),
            ("/history", self.history, ["GET"]),
            ("/session", self.session, ["GET"]),
            ("/openapi.json", self.openapi_json, ["GET"]),
        ]
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            *(Route(API + path, fn, methods=methods) for path, fn, methods in api),
        ]

    # the page

    def page(self, request: Request) -> Response:
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return error(404, "not found")
        return Response(_static(name), media_type=STATIC[name])

    def login_page(self, request: Request) -> Response:
        return Response(_static("login.html"), media_type="text/html; charset=utf-8")

    async def login(self, request: Request) -> Response:
        body = await _body(request)
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not self.guard.tokens_required:
            return RedirectResponse("/", status_code=303)
        name = self.guard.check_token(token)
        if name is None:
            return RedirectResponse("/login?failed=1", status_code=303)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            auth.SESSION_COOKIE,
            self.guard.new_session(name),
            max_age=auth.SESSION_S,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # /metrics

    def metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = self.views.body(
            f"metrics {content_type}", METRICS_VIEWS, lambda: encoder(self.registry)
        )
        return Response(body, headers={"content-type": content_type})

    # the API

    def json_view(self, name: str) -> Response:
        """The view ``name`` with its ``generated_at``, as JSON rendered once per snapshot."""

        def render() -> bytes:
            value, generated_at = self.views.get(name)
            return _json_bytes({"generated_at": generated_at, **value})

        return Response(self.views.body(name, (name,), render), media_type="application/json")

    def view(self, name: str) -> Callable[[Request], Response]:
        def read(request: Request) -> Response:
            return self.json_view(name)

        read.__name__ = name
        return read

    def summary(self, request: Request) -> Response:
        raw = request.query_params.get("now")
        if raw is None:
            return self.json_view("summary")
        now = _number(raw, "now", 0.0, 1e11)
        return JSONResponse({"generated_at": now, **self.views.fresh("summary", now)})

    def series(self, request: Request) -> Response:
        wanted = request.query_params.getlist("endpoint")
        if not wanted:
            raise BadParameter("endpoint", "endpoint: required (repeatable), or * for all")
        if len(wanted) > MAX_SERIES_ENDPOINTS:
            raise BadParameter("endpoint", f"endpoint: at most {MAX_SERIES_ENDPOINTS} of them")
        if any(not e or len(e) > MAX_NAME_LEN for e in wanted):
            raise BadParameter("endpoint", f"endpoint: 1 to {MAX_NAME_LEN} characters each")
        if "*" in wanted:
            return self.json_view("series")
        value, generated_at = self.views.get("series")
        series = {e: value["series"].get(e, []) for e in wanted}
        return JSONResponse({"generated_at": generated_at, **value, "series": series})

    def history(self, request: Request) -> Response:
        """``get_history`` over HTTP: ``since`` (required), ``until``, ``step``, ``endpoint``."""
        query = request.query_params
        since = _number(query.get("since", ""), "since", 0.0, 1e11)
        until = query.get("until")
        endpoint = query.get("endpoint")
        if endpoint is not None and not 0 < len(endpoint) <= MAX_NAME_LEN:
            raise BadParameter("endpoint", f"endpoint: 1 to {MAX_NAME_LEN} characters")
        now = time.time()
        try:
            document = self.views.monitor.get_history(
                since,
                None if until is None else _number(until, "until", 0.0, 1e11),
                step=query.get("step", "1h"),
                endpoint=endpoint,
                now=now,
            )
        except ValueError as exc:  # the message starts with the argument's name
            name = str(exc).split(" ", 1)[0].rstrip(":")
            raise BadParameter(name if name in _HISTORY_PARAMETERS else None, str(exc)) from None
        except REDIS_FAULTS as exc:
            raise _unreachable(self.settings, exc) from None
        return JSONResponse({"generated_at": now, **document})

    def queues(self, request: Request) -> Response:
        summary, generated_at = self.views.get("summary")
        return JSONResponse(
            {
                "generated_at": generated_at,
                "queues": summary["celery"],
                "broker": summary["queue_broker"],
            }
        )

    def session(self, request: Request) -> Response:
        who: auth.Identity = request.state.identity
        return JSONResponse(
            {
                "user": who.name,
                "auth": who.via,
                "csrf_token": self.guard.csrf_token(who),
                "tokens_required": self.guard.tokens_required,
                "thresholds": {
                    "error_rate": self.settings.error_rate_threshold,
                    "p95_response_time": self.settings.api_response_threshold,
                    "payment_failures": self.settings.payment_failure_threshold,
                    "queue_length": self.settings.celery_queue_threshold,
                    "task_failure_rate": self.settings.task_failure_rate_threshold,
                    "min_task_runs": self.settings.min_task_runs,
                    "task_queue_wait": self.settings.task_wait_threshold,
                    "db_p95_query_time": self.settings.db_p95_threshold,
                    "cache_hit_rate_min": self.settings.cache_hit_rate_min,
                    "min_cache_lookups": self.settings.min_cache_lookups,
                    "min_requests": self.settings.min_requests,
                },
                "history": dict(
                    zip(
                        ("minutes_retention_s", "hours_retention_s"),
                        self.settings.history_retention,
                        strict=True,
                    )
                ),
            }
        )

    def openapi_json(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    async def add_silence(self, request: Request) -> Response:
        data = await _json_object(request)
        key, duration, reason = data.get("key"), data.get("duration"), data.get("reason", "")
        for name, value in (("key", key), ("duration", duration), ("reason", reason)):
            if not isinstance(value, str):
                raise BadParameter(name, f"{name}: must be a string")
        assert isinstance(key, str) and isinstance(duration, str) and isinstance(reason, str)
        try:
            seconds = throttle.parse_duration(duration)
        except ValueError as exc:
            raise BadParameter("duration", str(exc)) from None
        who: auth.Identity = request.state.identity
        monitor = self.views.monitor
        try:
            silence = throttle.add_silence(
                monitor.store(), self.settings, key, seconds, reason, created_by=who.name
            )
        except ValueError as exc:
            name = str(exc).partition(":")[0]
            raise BadParameter("key" if name == "pattern" else "reason", str(exc)) from None
        except REDIS_FAULTS as exc:
            raise _unreachable(self.settings, exc) from None
        self.views.forget("silences")
        self.views.forget("alerts")
        log.info("silence %r for %s added by %s", key, duration, who.name)
        return JSONResponse(silence, status_code=201)

    def remove_silence(self, request: Request) -> Response:
        key = request.path_params["key"]
        monitor = self.views.monitor
        try:
            removed = throttle.remove_silence(monitor.store(), self.settings, key)
        except REDIS_FAULTS as exc:
            raise _unreachable(self.settings, exc) from None
        if not removed:
            return error(404, "no silence on exactly this key", "key")
        self.views.forget("silences")
        self.views.forget("alerts")
        who: auth.Identity = request.state.identity
        log.info("silence %r removed by %s", key, who.name)
        return JSONResponse({"removed": key})


def _json_bytes(value: Any) -> bytes:
    """JSON as Starlette's JSONResponse writes it (UTF-8, compact, no NaN)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def _number(raw: str, name: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low < value <= high):
        raise BadParameter(name, f"{name}: a unix time in seconds, > {low:g} and <= {high:g}")
    return value


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX:
            raise BadParameter("body", f"body: at most {BODY_MAX} bytes")
    return body


async def _json_object(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadParameter("body", "body: must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(await _body(request))
    except (ValueError, RecursionError):
        raise BadParameter("body", "body: not valid JSON") from None
    if not isinstance(data, dict):
        raise BadParameter("body", "body: must be a JSON object")
    return data


# -- errors -----------------------------------------------------------------------------------


def _unreachable(settings: Settings, exc: BaseException) -> MonitorError:
    return MonitorError(describe_error(settings, exc))


async def _bad_parameter(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadParameter)
    return error(400, str(exc), exc.parameter)


async def _monitor_error(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error(503, str(exc).splitlines()[0] if str(exc) else "the metrics store failed")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return error(exc.status_code, str(message), None)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal error (see the server's log)")


def create_app(
    settings: Settings, bound_host: str = "127.0.0.1", monitor: MetricsMonitor | None = None
) -> ASGIApp:
    """The whole application for ``settings``, served on ``bound_host``."""
    guard = auth.Guard(settings, bound_host)
    handlers = Handlers(settings, guard, monitor or MetricsMonitor(settings=settings))
    handlers_of: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        BadParameter: _bad_parameter,
        MonitorError: _monitor_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    app = Starlette(routes=handlers.routes(), exception_handlers=handlers_of)
    return Security(app, guard)
