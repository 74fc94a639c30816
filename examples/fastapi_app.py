"""A minimal FastAPI app tracked by monitor-worker.

Start it from the repository root: ``uvicorn examples.fastapi_app:app``
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse

from monitor_worker.integrations.starlette import MetricsMiddleware

if TYPE_CHECKING:
    from monitor_worker import MetricsMonitor

CHUNKS = 3
CHUNK_GAP_S = 0.2

api = APIRouter()


@api.get("/review/today/")
async def review_today() -> dict[str, int]:
    return {"reviews": 3}


@api.get("/users/{user_id}/")
async def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@api.get("/boom/")
async def boom() -> None:
    raise RuntimeError("boom")


@api.get("/stream/")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(CHUNKS):
            if i:
                await asyncio.sleep(CHUNK_GAP_S)
            yield b"chunk %d\n" % i

    return StreamingResponse(chunks(), media_type="text/plain")


def create_app(monitor: MetricsMonitor | None = None) -> FastAPI:
    app = FastAPI()
    app.include_router(api, prefix="/api")

    @app.get("/health", response_class=PlainTextResponse)
    async def health() -> str:
        return "ok"

    app.add_middleware(MetricsMiddleware, monitor=monitor)
    return app


app = create_app()
