"""A minimal Django project tracked by monitor-worker.

Start it from the repository root::

    gunicorn examples.django_app.wsgi            # WSGI
    uvicorn examples.django_app.asgi:application   # ASGI
"""
