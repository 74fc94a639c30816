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
# Django sets the process time zone from this (default America/Chicago): logs of gunicorn
# workers then show -0600. UTC keeps their timestamps with the rest of the deployment.
TIME_ZONE = "UTC"
LOGGING = {"version": 1, "disable_existing_loggers": False}
