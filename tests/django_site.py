"""The Django project of the tests: the example's routes, plus nested includes, re_paths and
views raising what Django turns into responses."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, RequestAborted
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import include, path, re_path

from monitor_worker.integrations.django import MetricsMiddleware

SETTINGS = {
    "SECRET_KEY": "tests-only",
    "DEBUG": False,
    "ALLOWED_HOSTS": ["*"],
    "ROOT_URLCONF": "tests.django_site",
    "MIDDLEWARE": ["tests.django_site.Middleware", "django.middleware.common.CommonMiddleware"],
    "INSTALLED_APPS": [],
    "DATABASES": {},
    "USE_TZ": True,
    "LOGGING_CONFIG": None,
}


class Middleware(MetricsMiddleware):
    """The integration, recording into the monitor a test sets here."""


def forbidden(request: HttpRequest, pk: int) -> HttpResponse:
    raise PermissionDenied


def missing(request: HttpRequest, pk: int) -> HttpResponse:
    raise Http404("no such item")


def year(request: HttpRequest, year: str) -> HttpResponse:
    return HttpResponse(year)


def aborted(request: HttpRequest) -> HttpResponse:
    raise RequestAborted


items = [
    path("items/<int:pk>/forbidden/", forbidden),
    path("items/<int:pk>/", missing),
]
legacy = [re_path(r"^year/(?P<year>[0-9]{4})/$", year)]

urlpatterns = [
    path("", include("examples.django_app.urls")),
    path("v1/", include(items)),
    re_path(r"^r/(?P<year>[0-9]{4})/$", year),
    re_path(r"^legacy/", include(legacy)),
    path("aborted/", aborted),
]
