"""The dashboard server: the page at ``/``, the JSON API at ``/api/v1``, ``/metrics``.

``import monitor_worker`` does not import this package. Layout: ``auth`` (tokens, sessions,
CSRF, Host and Origin rules), ``views`` (shared snapshots of the store), ``openapi`` (the
API's contract), ``exposition`` (the Prometheus collector), ``app`` (routes and the security
middleware), ``server`` (uvicorn, the bind rule), ``static/`` (the page, no build step).

Usage::

    monitor-worker web --host 127.0.0.1 --port 8350
"""
