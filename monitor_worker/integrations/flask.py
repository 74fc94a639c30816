"""Request tracking for Flask.

Usage::

    from monitor_worker.integrations.flask import init_app

    init_app(app)        # in the app factory too; blueprints need nothing more

The endpoint is the matched rule (``/items/<int:item_id>``, blueprint prefixes included); a
request no rule matches, or whose method the rule does not allow, is ``__unmatched__``.

``init_app`` wraps the app's ``full_dispatch_request`` (on the instance): it runs inside
Flask's request context, where the matched rule, the response and its status are known, so
no WSGI wrapper, hook or signal is needed per request. Time runs from there until the body is
handed over: at once for a built response, at the end of the body for a streamed one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from ._core import Recorder, TimedBody, status_of_exception

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

_perf = time.perf_counter


def _rule_of(rule: Any) -> str | None:
    return None if rule is None else str(rule.rule)


def _tracked(dispatch: Callable[[], Response], recorder: Recorder) -> Callable[[], Response]:
    def full_dispatch_request() -> Response:
        # one context lookup, not one per attribute (werkzeug documents _get_current_object)
        current = request._get_current_object()  # type: ignore[attr-defined]
        method = current.method
        if recorder.skip(method, current.path):
            return dispatch()
        started = _perf()
        try:
            response = dispatch()
        except BaseException as exc:
            recorder.record(method, _rule_of, current.url_rule, status_of_exception(exc), started)
            raise
        rule = current.url_rule
        if not response.is_streamed:
            recorder.record(method, _rule_of, rule, response.status_code, started)
            return response

        def finish(status: int | None) -> None:
            code = response.status_code if status is None else status
            recorder.record(method, _rule_of, rule, code, started)

        response.response = TimedBody(response.response, finish)
        return response

    return full_dispatch_request


def init_app(app: Flask, *, monitor: MetricsMonitor | None = None) -> None:
    """Track every request of ``app``."""
    if "monitor_worker" in app.extensions:
        return  # already tracked: a second call would count each request twice
    app.extensions["monitor_worker"] = True
    app.full_dispatch_request = _tracked(  # type: ignore[method-assign]
        app.full_dispatch_request, Recorder(monitor)
    )
