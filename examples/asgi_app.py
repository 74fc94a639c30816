"""A bare ASGI app tracked by the generic middleware (paths templated by the heuristic).

Start it from the repository root: ``uvicorn examples.asgi_app:application``
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from monitor_worker.integrations.asgi import MetricsMiddleware

CHUNKS = 3
CHUNK_GAP_S = 0.2


async def _reply(send: Any, status: int, body: bytes, more: bool = False) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    parts = path.strip("/").split("/")
    if scope["method"] != "GET":
        await _reply(send, 405, b"method not allowed")
    elif path == "/api/review/today/":
        await _reply(send, 200, json.dumps({"reviews": 3}).encode())
    elif len(parts) == 3 and parts[:2] == ["api", "users"] and parts[2].isdigit():
        await _reply(send, 200, json.dumps({"id": int(parts[2])}).encode())
    elif path == "/api/boom/":
        raise RuntimeError("boom")
    elif path == "/api/stream/":
        await _reply(send, 200, b"chunk 0\n", more=True)
        for i in range(1, CHUNKS):
            await asyncio.sleep(CHUNK_GAP_S)
            await send(
                {
                    "type": "http.response.body",
                    "body": b"chunk %d\n" % i,
                    "more_body": i < CHUNKS - 1,
                }
            )
    elif path == "/health":
        await _reply(send, 200, b"ok")
    else:
        await _reply(send, 404, b"not found")


application = MetricsMiddleware(app)
