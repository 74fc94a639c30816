"""What runs inside the host app: request tracking for web frameworks (one module per
framework, one shared core), Celery tasks, database queries and caches.

Importing ``monitor_worker`` imports none of these; each imports only its own framework.
"""
