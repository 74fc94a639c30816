"""Serve ``tests.apps.django_site`` on a loopback port: ``wsgi`` (a threaded WSGI server, one
thread per request) or ``asgi`` (uvicorn).

    python -m tests.apps.django_serve wsgi|asgi PORT
"""

from __future__ import annotations

import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.django_site")
    if kind == "wsgi":
        from django.core.wsgi import get_wsgi_application

        server = make_server(
            "127.0.0.1", port, get_wsgi_application(), _ThreadingServer, _QuietHandler
        )
        server.serve_forever()
    else:
        import uvicorn
        from django.core.asgi import get_asgi_application

        uvicorn.run(
            get_asgi_application(), host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )


if __name__ == "__main__":
    main()
