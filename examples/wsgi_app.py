"""A bare WSGI app tracked by the generic middleware (paths templated by the heuristic).

Start it from the repository root: ``gunicorn examples.wsgi_app:application``
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from monitor_worker.integrations.wsgi import MetricsMiddleware

CHUNKS = 3
CHUNK_GAP_S = 0.2


def _chunks() -> Iterator[bytes]:
    for i in range(CHUNKS):
        if i:
            time.sleep(CHUNK_GAP_S)
        yield b"chunk %d\n" % i


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    parts = path.strip("/").split("/")
    if environ.get("REQUEST_METHOD") != "GET":
        start_response("405 Method Not Allowed", [("Allow", "GET")])
        return [b"method not allowed"]
    if path == "/api/review/today/":
        body = [json.dumps({"reviews": 3}).encode()]
    elif len(parts) == 3 and parts[:2] == ["api", "users"] and parts[2].isdigit():
        body = [json.dumps({"id": int(parts[2])}).encode()]
    elif path == "/api/boom/":
        raise RuntimeError("boom")
    elif path == "/api/stream/":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _chunks()
    elif path == "/health":
        body = [b"ok"]
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return body


application = MetricsMiddleware(app)
