"""Serving the dashboard with uvicorn: the bind rule, the listening socket, TLS, and the
child process ``monitor-worker run`` and ``demo`` start beside themselves.

Usage::

    serve(Settings.from_env(), "127.0.0.1", 8350)            # blocks (``monitor-worker web``)
    child = start_beside(8350, env=os.environ)               # run/demo: None if the port is taken
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from ..lifetime import child_preexec
from .auth import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8350


def check_bind(settings: Settings, host: str) -> None:
    """Beyond loopback only with tokens: ConfigError naming MONITOR_WEB_TOKENS otherwise."""
    if not is_loopback(host) and not settings.web_tokens:
        raise ConfigError(
            f"MONITOR_WEB_TOKENS: must be set (name=token pairs) to serve on {host}, which is "
            "not a loopback address"
        )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; OSError when it is taken or not ours."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bare, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(host: str, port: int, *, tls: bool = False) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def serve(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Serve until interrupted. ConfigError (bind rule, TLS files), OSError (port taken)."""
    import uvicorn

    from .app import create_app

    check_bind(settings, host)
    if bool(certfile) != bool(keyfile):
        raise ConfigError("--certfile and --keyfile: give both or neither")
    for name, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{name}: no such file: {path}")
    sock = listen(host, port)
    config = uvicorn.Config(
        create_app(settings, bound_host=host),
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])


def start_beside(port: int, env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
    """Start ``monitor-worker web`` on 127.0.0.1:``port`` as a child process and print its URL;
    when the port is taken print one warning and return None (the caller runs on without it).
    """
    try:
        listen(DEFAULT_HOST, port).close()
    except OSError as exc:
        sys.stderr.write(
            f"monitor-worker: warning: the web dashboard is not started: {DEFAULT_HOST}:{port} "
            f"is not free ({exc.strerror}); pick another with --web-port N, or --no-web\n"
        )
        return None
    child = subprocess.Popen(
        [sys.executable, "-m", "monitor_worker.cli", "web", "--port", str(port)],
        env=dict(env),
        start_new_session=True,
        preexec_fn=child_preexec(),  # stops with its parent, even one killed outright
    )
    sys.stdout.write(f"web dashboard: {url_of(DEFAULT_HOST, port)}\n")
    sys.stdout.flush()
    return child


def stop(child: subprocess.Popen[Any] | None) -> None:
    """Stop a child started by ``start_beside`` (SIGTERM, then SIGKILL after 10 s)."""
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)
