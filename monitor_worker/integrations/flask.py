"""Request tracking for Flask.

Usage::

    from monitor_worker.integrations.flask import init_app

    init_app(app)        # in the app factory too; blueprints need nothing more

The endpoint is the matched rule (``/items/<int:item_id>``, blueprint prefixes included); a
request no rule matches, or whose method the rule does not allow, is ``__unmatched__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, got_request_exception, request

from . import wsgi

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

_RULE_KEY = "monitor_worker.rule"


class _Exchange(wsgi.Exchange):
    __slots__ = ()

    def start(self, status: str, headers: list[Any], exc_info: Any = None) -> Any:
        # Flask starts the response inside its request context: the matched rule is read
        # from the request werkzeug keeps in the environ (Flask clears it as the context ends).
        rule = getattr(self._environ.get("werkzeug.request"), "url_rule", None)
        if rule is not None:
            self._environ[_RULE_KEY] = rule.rule
        return super().start(status, headers, exc_info)


class _Middleware(wsgi.MetricsMiddleware):
    exchange_class = _Exchange


def _remember_rule(sender: Flask, **extra: Any) -> None:
    # A view raised and Flask propagates the exception (testing, PROPAGATE_EXCEPTIONS): no
    # response is started, so the rule is kept here, while the request context is active.
    rule = request.url_rule
    if rule is not None:
        request.environ[_RULE_KEY] = rule.rule


def matched_rule(environ: wsgi.Environ) -> str | None:
    """The rule Flask matched for this request (None: no rule matched)."""
    rule = environ.get(_RULE_KEY)
    return rule if isinstance(rule, str) else None


def init_app(app: Flask, *, monitor: MetricsMonitor | None = None) -> None:
    """Track every request of ``app`` (wraps ``app.wsgi_app``, the way Flask documents)."""
    if "monitor_worker" in app.extensions:
        return  # already tracked: a second call would count each request twice
    app.extensions["monitor_worker"] = True
    got_request_exception.connect(_remember_rule, app)
    app.wsgi_app = _Middleware(  # type: ignore[method-assign]
        app.wsgi_app, matched_rule, monitor=monitor, unmatched_statuses=(405,)
    )
