"""A host app's Django project in one module (settings, URLs, views), with
``monitor_worker.integrations.django`` in ``INSTALLED_APPS`` and its ``MetricsMiddleware``;
``test_integration_django`` serves it under WSGI and ASGI (``django_serve``). Under ASGI the
middleware runs async and the sync views on another thread."""

from __future__ import annotations

import os
from typing import Any

from django.core.cache import caches
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = __name__
INSTALLED_APPS = ["monitor_worker.integrations.django"]
MIDDLEWARE = ["monitor_worker.integrations.django.MetricsMiddleware"]
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
