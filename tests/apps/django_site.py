"""A host app's Django project in one module (settings, URLs, views, its own request
middleware), with ``monitor_worker.integrations.django`` in ``INSTALLED_APPS``;
``test_integration_django`` serves it under WSGI and ASGI (``django_serve``).

The middleware is the host app's: it times each request and tracks it with the query count
of the ``QueryScope`` it opens (async under ASGI, so the sync views run on another thread).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.cache import caches
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.utils.decorators import sync_and_async_middleware

from monitor_worker import metrics_monitor
from monitor_worker.tracking import QueryScope

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = __name__
INSTALLED_APPS = ["monitor_worker.integrations.django"]
MIDDLEWARE = [f"{__name__}.track_requests"]
DATABASES: dict[str, Any] = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("TEST_SQLITE", "")}
}
if os.environ.get("TEST_PG_NAME"):
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["TEST_PG_NAME"],
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": 5432,
    }
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("TEST_REDIS_CACHE_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": os.environ.get("MONITOR_KEY_PREFIX", ""),
    },
}


def _track(request: HttpRequest, response: HttpResponse, started: float, queries: int) -> None:
    match = request.resolver_match
    endpoint = f"/{match.route}" if match is not None else "<unmatched>"
    metrics_monitor.track_api_request(
        endpoint, time.perf_counter() - started, response.status_code, queries=queries
    )


@sync_and_async_middleware
def track_requests(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            started = time.perf_counter()
            with QueryScope() as scope:
                response: HttpResponse = await get_response(request)
            _track(request, response, started, scope.queries)
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        with QueryScope() as scope:
            response: HttpResponse = get_response(request)
        _track(request, response, started, scope.queries)
        return response

    return middleware


def _run(request: HttpRequest, n: int, sql: str = "SELECT 1") -> None:
    with connections[request.GET.get("db", "default")].cursor() as cursor:
        for _ in range(n):
            cursor.execute(sql)


def one(request: HttpRequest) -> HttpResponse:
    _run(request, 1)
    return HttpResponse("1 query")


def many(request: HttpRequest) -> HttpResponse:
    _run(request, 25)
    return HttpResponse("25 queries")


def broken(request: HttpRequest) -> HttpResponse:
    try:
        _run(request, 1, "SELECT * FROM no_such_table")
    except DatabaseError:
        return HttpResponse("the query failed")
    return HttpResponse("the query ran", status=500)


# The cache scenario, the same in both forms: 14 lookups, 9 hits.
#   get: None, 0, False and "" stored -> 4 hits; a missing key -> 1 miss
#   get_many: 2 stored and 2 missing keys -> 4 lookups, 2 hits
#   get_or_set: a new key (miss), the same again (hit), the key holding None (hit)
#   has_key: a stored key (hit), a missing one (miss)
STORED = {"none": None, "zero": 0, "false": False, "empty": ""}


def cache_scenario(request: HttpRequest) -> JsonResponse:
    cache, p = caches[request.GET["cache"]], request.GET["p"]
    cache.set_many({p + k: v for k, v in STORED.items()})
    got = [cache.get(p + k, "default") for k in (*STORED, "missing")]
    many = cache.get_many([p + "none", p + "zero", p + "m1", p + "m2"])
    made = [cache.get_or_set(p + "new", 5), cache.get_or_set(p + "new", 6)]
    made.append(cache.get_or_set(p + "none", lambda: 9))
    has = [cache.has_key(p + "false"), cache.has_key(p + "missing")]
    return JsonResponse({"got": got, "many": len(many), "made": made, "has": has})


async def acache_scenario(request: HttpRequest) -> JsonResponse:
    cache, p = caches[request.GET["cache"]], request.GET["p"]
    await cache.aset_many({p + k: v for k, v in STORED.items()})
    got = [await cache.aget(p + k, "default") for k in (*STORED, "missing")]
    many = await cache.aget_many([p + "none", p + "zero", p + "m1", p + "m2"])
    made = [await cache.aget_or_set(p + "new", 5), await cache.aget_or_set(p + "new", 6)]
    made.append(await cache.aget_or_set(p + "none", lambda: 9))
    has = [await cache.ahas_key(p + "false"), await cache.ahas_key(p + "missing")]
    return JsonResponse({"got": got, "many": len(many), "made": made, "has": has})


urlpatterns = [
    path("one/", one),
    path("many/", many),
    path("broken/", broken),
    path("cache/", cache_scenario),
    path("acache/", acache_scenario),
]
