"""Request tracking for Flask.

Usage::

    from monitor_worker.integrations.flask import init_app

    init_app(app)        # in the app factory too; blueprints need nothing more

The endpoint is the matched rule (``/items/<int:item_id>``, blueprint prefixes included); a
request no rule matches, or whose method the rule does not allow, is ``__unmatched__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, request

from . import wsgi

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

_RULE_KEY = "monitor_worker.rule"


def _remember_rule(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # Flask clears its request object from the environ when the request context ends, so the
    # matched rule is copied into the environ before the view runs, by the first URL value
    # preprocessor (called for every request, before the before_request functions).
    if endpoint is not None:
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
    app.url_value_preprocessors.setdefault(None, []).insert(0, _remember_rule)
    app.wsgi_app = wsgi.MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, matched_rule, monitor=monitor, unmatched_statuses=(405,)
    )
