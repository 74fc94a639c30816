"""Flask: init_app on the example app (a blueprint, an app factory) through Flask's test
client, read back from the real store."""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask, abort
from flask.testing import FlaskClient

from examples.flask_app import create_app
from monitor_worker.config import Settings
from monitor_worker.integrations._core import UNMATCHED
from monitor_worker.integrations.flask import init_app
from monitor_worker.monitor import MetricsMonitor

from .integration_cases import CASES, expected, monitor, response_times, wait_counts

__all__ = ["monitor"]

USERS = "/api/users/<int:user_id>/"


def _get(client: FlaskClient, path: str, method: str = "GET") -> int:
    """One request, its body read to the end and closed (as a server does)."""
    response = client.open(path, method=method)
    response.get_data()
    response.close()
    return response.status_code


def _app(monitor: MetricsMonitor) -> Flask:
    app = create_app(monitor)
    extra = Blueprint("extra", __name__, url_prefix="/v1")

    @extra.get("/items/<int:item_id>/forbidden")
    def forbidden(item_id: int) -> str:
        abort(403)

    @extra.get("/teapot")
    def teapot() -> str:
        abort(418)

    app.register_blueprint(extra)
    return app


def test_example_app_table(settings: Settings, monitor: MetricsMonitor) -> None:
    client = _app(monitor).test_client()
    for case in CASES:
        status = _get(client, case.path, case.method)
        if case.endpoint is not None:
            assert status == case.status, case
    wait_counts(settings, expected(USERS), monitor)


def test_raising_view_is_one_500_and_reaches_the_caller(
    settings: Settings, monitor: MetricsMonitor
) -> None:
    app = _app(monitor)
    app.testing = True  # Flask propagates the exception instead of answering 500
    with pytest.raises(RuntimeError, match="boom"):
        app.test_client().get("/api/boom/")
    wait_counts(settings, {"/api/boom/": {500: 1}}, monitor)


def test_abort_records_its_status_under_the_blueprint_rule(
    settings: Settings, monitor: MetricsMonitor
) -> None:
    client = _app(monitor).test_client()
    assert _get(client, "/v1/items/5/forbidden") == 403
    assert _get(client, "/v1/teapot") == 418
    assert _get(client, "/v1/teapot/") == 404
    wait_counts(
        settings,
        {
            "/v1/items/<int:item_id>/forbidden": {403: 1},
            "/v1/teapot": {418: 1},
            UNMATCHED: {404: 1},
        },
        monitor,
    )


def test_stream_is_timed_to_its_last_chunk(settings: Settings, monitor: MetricsMonitor) -> None:
    client = _app(monitor).test_client()
    response = client.get("/api/stream/", buffered=False)
    assert response.get_data() == b"chunk 0\nchunk 1\nchunk 2\n"
    response.close()
    assert response_times(monitor)["/api/stream/"] >= 0.4


def test_client_gone_mid_stream_is_499(settings: Settings, monitor: MetricsMonitor) -> None:
    client = _app(monitor).test_client()
    response = client.get("/api/stream/", buffered=False)
    assert next(iter(response.response)) == b"chunk 0\n"
    response.close()  # the server stops sending: the client went away
    wait_counts(settings, {"/api/stream/": {499: 1}}, monitor)


def test_init_app_twice_counts_once_and_factories_are_independent(
    settings: Settings, monitor: MetricsMonitor
) -> None:
    first = _app(monitor)
    init_app(first, monitor=monitor)
    second = _app(monitor)
    for app in (first, second):
        assert _get(app.test_client(), "/api/users/3/") == 200
    wait_counts(settings, {USERS: {200: 2}}, monitor)


def test_method_route_style(settings: Settings) -> None:
    tracked = MetricsMonitor(settings.with_overrides(endpoint_style="method_route"))
    try:
        assert _get(_app(tracked).test_client(), "/api/review/today/") == 200
        wait_counts(settings, {"GET /api/review/today/": {200: 1}}, tracked)
    finally:
        tracked.close()
