"""Django: the app entry that hooks every database connection and every configured cache.

Usage, in the host app's settings::

    INSTALLED_APPS = [..., "monitor_worker.integrations.django"]

No database ``ENGINE`` and no cache ``BACKEND`` changes. Its ``AppConfig`` (``apps.py``: Django
finds an app's config there) installs ``django_db`` (query time per database alias, and the
query count of the request in the open ``QueryScope``) and ``django_cache`` (lookups and hits
per cache alias) when Django starts.
"""
