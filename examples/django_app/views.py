"""The example routes: a plain view, a templated one, one that raises, a stream, a health check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

CHUNKS = 3
CHUNK_GAP_S = 0.2


@require_GET
def review_today(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"reviews": 3})


@require_GET
def user(request: HttpRequest, pk: int) -> HttpResponse:
    return JsonResponse({"id": pk})


@require_GET
def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def _chunks() -> Iterator[bytes]:
    for i in range(CHUNKS):
        if i:
            time.sleep(CHUNK_GAP_S)
        yield b"chunk %d\n" % i


async def _async_chunks() -> AsyncIterator[bytes]:
    for i in range(CHUNKS):
        if i:
            await asyncio.sleep(CHUNK_GAP_S)
        yield b"chunk %d\n" % i


@require_GET
def stream(request: HttpRequest) -> HttpResponse:
    # Django wants an async iterator under ASGI and a sync one under WSGI.
    if isinstance(request, ASGIRequest):
        return StreamingHttpResponse(_async_chunks(), content_type="text/plain")
    return StreamingHttpResponse(_chunks(), content_type="text/plain")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
