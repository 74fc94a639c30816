"""Who may talk to the dashboard server, and from where: tokens, sessions, CSRF, Host, Origin.

Pure functions and one small class, no I/O: the ASGI middleware in ``app.py`` applies them.

- Without ``MONITOR_WEB_TOKENS`` the server listens on loopback only (``server.check_bind``)
  and every request is the user ``local``.
- With tokens, a request carries ``Authorization: Bearer <token>`` (scripts) or the session
  cookie set by the login form (the page). Tokens are compared in constant time, each against
  every configured token, so the time taken tells nothing about which one nearly matched.
- The session cookie is ``<name>.<expires>.<hmac>`` signed with that name's own token: it holds
  no secret, works across server processes and restarts, and dies with its token.
- Requests authenticated by the cookie or by loopback alone need a CSRF token to change state
  (``X-CSRF-Token``); it is an HMAC of the session under a key made at start-up, readable only
  by a same-origin page (no CORS headers are ever sent). Bearer requests need none.

Usage::

    guard = Guard(settings, bound_host="127.0.0.1")
    guard.host_allowed("localhost:8350")            # True
    who = guard.identify(authorization, cookie)     # Identity or None
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import Settings

SESSION_COOKIE = "mw_session"
SESSION_S = 12 * 3600
CSRF_HEADER = "x-csrf-token"
LOCAL_USER = "local"
_ALWAYS_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: ``name`` (a token's name or ``local``) and how it came in:
    ``bearer``, ``cookie`` or ``loopback``."""

    name: str
    via: str
    session: str = ""  # the cookie value, bound into the CSRF token

    @property
    def needs_csrf(self) -> bool:
        return self.via != "bearer"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_only(value: str) -> str:
    """The host name of a ``Host`` header value or of a ``MONITOR_WEB_ALLOWED_HOSTS`` entry."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """The server's security rules for one set of settings and one bound address."""

    def __init__(self, settings: Settings, bound_host: str) -> None:
        self.tokens = settings.web_token_names  # token -> name
        self.token_of_name = {name: token for token, name in self.tokens.items()}
        self.metrics_token = settings.metrics_token
        bound = bound_host.lower()
        if ":" in bound and not bound.startswith("["):
            bound = f"[{bound}]"
        hosts = {*_ALWAYS_ALLOWED_HOSTS, bound}
        hosts.update(_host_only(h) for h in settings.web_allowed_hosts)
        self.allowed_hosts = frozenset(hosts - {"0.0.0.0", "[::]"})
        self._csrf_key = secrets.token_bytes(32)

    @property
    def tokens_required(self) -> bool:
        return bool(self.tokens)

    # -- where a request comes from ------------------------------------------------------------

    def host_allowed(self, host_header: str | None) -> bool:
        """DNS rebinding: the ``Host`` must name this server (see MONITOR_WEB_ALLOWED_HOSTS)."""
        return bool(host_header) and _host_only(host_header or "") in self.allowed_hosts

    @staticmethod
    def origin_allowed(origin: str | None, scheme: str, host_header: str | None) -> bool:
        """No ``Origin``, or exactly this server's own (scheme, host and port)."""
        if origin is None:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return bool(host_header) and (
            parts.scheme == scheme and parts.netloc.lower() == (host_header or "").lower()
        )

    # -- who is asking -------------------------------------------------------------------------

    def check_token(self, presented: str) -> str | None:
        """The name of the token ``presented``, compared in constant time with every token."""
        found = None
        given = presented.encode("utf-8", "surrogateescape")
        for token, name in self.tokens.items():
            if hmac.compare_digest(given, token.encode()):
                found = name
        return found

    def identify(self, authorization: str | None, cookie: str | None) -> Identity | None:
        """The caller, or None when tokens are required and none was presented right."""
        bearer = _bearer(authorization)
        if not self.tokens:
            return Identity(LOCAL_USER, "bearer" if bearer is not None else "loopback")
        if bearer is not None:
            name = self.check_token(bearer)
            return Identity(name, "bearer") if name else None
        if cookie:
            name = self.session_user(cookie)
            return Identity(name, "cookie", cookie) if name else None
        return None

    def metrics_allowed(self, authorization: str | None, cookie: str | None) -> bool:
        """``/metrics``: the MONITOR_METRICS_TOKEN bearer when set, else the page's rule."""
        if self.metrics_token:
            bearer = _bearer(authorization)
            return bearer is not None and hmac.compare_digest(
                bearer.encode("utf-8", "surrogateescape"), self.metrics_token.encode()
            )
        return self.identify(authorization, cookie) is not None

    # -- sessions and CSRF -----------------------------------------------------------------------

    def new_session(self, name: str, now: float | None = None) -> str:
        """A session cookie value for the token named ``name``."""
        expires = int((time.time() if now is None else now) + SESSION_S)
        body = f"{name}.{expires}"
        return f"{body}.{self._sign(name, body)}"

    def session_user(self, value: str, now: float | None = None) -> str | None:
        parts = value.rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        name, expires, signature = parts
        if name not in self.token_of_name or int(expires) < (time.time() if now is None else now):
            return None
        good = self._sign(name, f"{name}.{expires}")
        return name if hmac.compare_digest(signature.encode(), good.encode()) else None

    def _sign(self, name: str, body: str) -> str:
        key = self.token_of_name[name].encode()
        return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, who: Identity) -> str:
        binding = f"{who.via}|{who.name}|{who.session}".encode()
        return hmac.new(self._csrf_key, binding, hashlib.sha256).hexdigest()

    def csrf_ok(self, who: Identity, presented: str | None) -> bool:
        if not who.needs_csrf:
            return True
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"), self.csrf_token(who).encode()
        )


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
