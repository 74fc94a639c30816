"""The embedded Valkey server: password, loopback, private URL file, persistence, one at a time."""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from monitor_worker.config import Settings, embedded_url_file, read_embedded_url, state_dir
from monitor_worker.embedded import EmbeddedRedis, EmbeddedServerError

URL_RE = re.compile(r"^redis://:[A-Za-z0-9_-]{40,}@127\.0\.0\.1:\d+/0$")


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point config.state_dir() (data dir and URL file) into the test's tmp directory."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


@pytest.fixture
def servers(xdg: Path) -> Iterator[list[EmbeddedRedis]]:
    """Every EmbeddedRedis a test appends here is stopped afterwards."""
    started: list[EmbeddedRedis] = []
    yield started
    for server in started:
        server.stop()


def _new(servers: list[EmbeddedRedis], **kwargs: object) -> EmbeddedRedis:
    server = EmbeddedRedis(**kwargs)  # type: ignore[arg-type]
    servers.append(server)
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _connect(url: str) -> redis.Redis:
    """A client without redis-py's sleeping retries, so refusals show at once."""
    return redis.Redis.from_url(url, socket_timeout=5, retry=Retry(NoBackoff(), 0))


def _ping_without_password(url: str) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(64)


def _write_url_file(text: str, mode: int) -> Path:
    path = embedded_url_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_start_serves_loopback_with_password_and_records_url(
    xdg: Path, servers: list[EmbeddedRedis]
) -> None:
    server = _new(servers).start()

    assert URL_RE.match(server.url), server.redacted_url
    password = urlsplit(server.url).password
    assert password and password not in server.redacted_url
    assert password not in repr(server)
    with _connect(server.url) as client:
        assert client.ping()
        config = client.config_get("*")
    assert config["bind"] == "127.0.0.1"
    assert config["protected-mode"] == "yes"
    assert config["appendonly"] == "yes"
    assert config["save"]
    assert Path(config["dir"]) == (xdg / "monitor-worker" / "valkey").resolve()
    assert _ping_without_password(server.url).startswith(b"-NOAUTH")

    url_file = embedded_url_file()
    assert url_file == xdg / "monitor-worker" / "redis-url"
    assert _mode(url_file) == 0o600
    assert _mode(state_dir()) == 0o700
    assert _mode(server.data_dir) == 0o700
    assert read_embedded_url() == server.url
    assert Settings.from_env({"XDG_DATA_HOME": os.environ["XDG_DATA_HOME"]}).redis_url == server.url


def test_existing_directories_are_made_private(
    tmp_path: Path, servers: list[EmbeddedRedis]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    state_dir().mkdir(mode=0o755, parents=True)
    data_dir.chmod(0o755)
    state_dir().chmod(0o755)

    _new(servers, data_dir=data_dir).start()

    assert _mode(data_dir) == 0o700
    assert _mode(state_dir()) == 0o700


def test_given_port_is_used(servers: list[EmbeddedRedis]) -> None:
    port = _free_port()
    server = _new(servers, port=port).start()
    assert urlsplit(server.url).port == port


def test_data_survives_a_restart(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    data_dir = tmp_path / "data"
    first = _new(servers, data_dir=data_dir).start()
    first_password = urlsplit(first.url).password
    with _connect(first.url) as client:
        client.set("mw:persist", "kept")
    first.stop()

    second = _new(servers, data_dir=data_dir).start()
    assert urlsplit(second.url).password != first_password
    with _connect(second.url) as client:
        assert client.get("mw:persist") == b"kept"


def test_stop_removes_url_file_and_is_idempotent(servers: list[EmbeddedRedis]) -> None:
    with _new(servers) as server:
        url = server.url
        assert embedded_url_file().exists()
    assert not server.running
    assert not embedded_url_file().exists()
    assert read_embedded_url() is None
    with (
        _connect(url) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()
    with pytest.raises(EmbeddedServerError):
        _ = server.url
    server.stop()
    server.stop()


def test_stop_leaves_a_url_file_it_no_longer_owns(servers: list[EmbeddedRedis]) -> None:
    server = _new(servers).start()
    other = "redis://:other@127.0.0.1:1/0"
    _write_url_file(other, 0o600)
    server.stop()
    assert read_embedded_url() == other


@pytest.mark.parametrize(
    "shared",
    ["data-dir", "url-file"],
    ids=["same-data-dir-other-url-file", "same-url-file-other-data-dir"],
)
def test_second_server_is_refused_while_the_first_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: list[EmbeddedRedis], shared: str
) -> None:
    """Each case leaves one signal only: the data directory's lock, or the live URL file."""
    first = _new(servers, data_dir=tmp_path / "one").start()
    first_url_file = embedded_url_file()
    if shared == "data-dir":
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "other-xdg"))
        second = _new(servers, data_dir=tmp_path / "one")
    else:
        second = _new(servers, data_dir=tmp_path / "two")

    with pytest.raises(EmbeddedServerError, match="already running") as info:
        second.start()

    assert str(first_url_file) in str(info.value)
    assert urlsplit(first.url).password not in str(info.value)
    assert not second.running
    assert first_url_file.read_text(encoding="utf-8").strip() == first.url
    with _connect(first.url) as client:
        assert client.ping()
    # the refused attempt holds nothing: once the first stops, the second starts
    first.stop()
    second.start()
    assert read_embedded_url() == second.url


@pytest.mark.parametrize(
    ("listening", "mode"),
    [(False, 0o600), (False, 0o644), (True, 0o600)],
    ids=["nothing-listens", "group-readable", "passwordless-server"],
)
def test_stale_url_file_is_replaced(
    servers: list[EmbeddedRedis], redis_url: str, listening: bool, mode: int
) -> None:
    """A recorded URL that does not answer with its password belongs to no running server."""
    if listening:  # a live server that takes any password: not an embedded one
        parts = urlsplit(redis_url)
        stale = f"redis://:not-its-password@{parts.hostname}:{parts.port}/0"
    else:
        stale = f"redis://:gone@127.0.0.1:{_free_port()}/0"
    url_file = _write_url_file(stale, mode)

    server = _new(servers).start()

    assert url_file.read_text(encoding="utf-8").strip() == server.url != stale
    assert _mode(url_file) == 0o600


def test_read_embedded_url_ignores_a_file_others_can_read(xdg: Path) -> None:
    url = "redis://:secret@127.0.0.1:16379/0"
    path = _write_url_file(url, 0o644)
    assert read_embedded_url() is None
    path.chmod(0o600)
    assert read_embedded_url() == url


def test_stop_in_a_forked_copy_leaves_the_server_running(servers: list[EmbeddedRedis]) -> None:
    server = _new(servers).start()
    pid = os.fork()
    if pid == 0:  # child: a prefork pool process exiting
        code = 1
        try:
            server.stop()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert read_embedded_url() == server.url
    with _connect(server.url) as client:
        assert client.ping()
    server.stop()
    assert not embedded_url_file().exists()
