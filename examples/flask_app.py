"""A minimal Flask app tracked by monitor-worker.

Start it from the repository root: ``gunicorn 'examples.flask_app:create_app()'``
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response

from monitor_worker.integrations.flask import init_app

if TYPE_CHECKING:
    from monitor_worker import MetricsMonitor

CHUNKS = 3
CHUNK_GAP_S = 0.2

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/review/today/")
def review_today() -> dict[str, int]:
    return {"reviews": 3}


@api.get("/users/<int:user_id>/")
def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@api.get("/boom/")
def boom() -> str:
    raise RuntimeError("boom")


@api.get("/stream/")
def stream() -> Response:
    def chunks() -> Iterator[bytes]:
        for i in range(CHUNKS):
            if i:
                time.sleep(CHUNK_GAP_S)
            yield b"chunk %d\n" % i

    return Response(chunks(), mimetype="text/plain")


def create_app(monitor: MetricsMonitor | None = None) -> Flask:
    app = Flask(__name__)
    app.register_blueprint(api)

    @app.get("/health")
    def health() -> str:
        return "ok"

    init_app(app, monitor=monitor)
    return app
