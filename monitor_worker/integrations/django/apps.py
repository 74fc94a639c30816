"""The AppConfig of ``monitor_worker.integrations.django``."""

from __future__ import annotations

from django.apps import AppConfig


class MonitorWorkerConfig(AppConfig):
    """Installs the database and cache hooks as Django starts (``ready``)."""

    name = "monitor_worker.integrations.django"
    label = "monitor_worker"
    verbose_name = "monitor-worker"

    def ready(self) -> None:
        from ..django_cache import install as install_cache
        from ..django_db import install as install_db

        install_db()
        install_cache()
