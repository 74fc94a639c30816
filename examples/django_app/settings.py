"""Settings of the example project: the one line monitor-worker needs is in MIDDLEWARE."""

SECRET_KEY = "example-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "examples.django_app.urls"
MIDDLEWARE = [
    "monitor_worker.integrations.django.MetricsMiddleware",
    "django.middleware.common.CommonMiddleware",
]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False}
