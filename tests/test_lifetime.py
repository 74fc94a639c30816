"""``monitor-worker run`` and ``demo`` leave nothing running behind them: stopped with SIGTERM
(sent to the main process only, as ``timeout``, systemd and Docker do) or killed outright, the
embedded server and the Celery processes they started stop too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor_worker.lifetime import die_with_parent

from .conftest import free_port
from .helpers import wait_for

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process tree from /proc"
)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie waiting for its reaper has stopped)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def _at_least(pids: set[int], count: int) -> set[int]:
    return pids if len(pids) >= count else set()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    procs: list[tuple[subprocess.Popen[bytes], set[int]]] = []

    def _start(*args: str, children: int) -> tuple[subprocess.Popen[bytes], set[int]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
        env.pop("SLACK_WEBHOOK_URL", None)
        env["XDG_DATA_HOME"] = str(tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor_worker.cli", *args, "--web-port", str(free_port())],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        tree: set[int] = set()
        procs.append((proc, tree))
        # The embedded server, the dashboard, the worker's pool child and its embedded beat
        # (and, for the demo, the worker process itself) are all up.
        tree |= wait_for(lambda: _at_least(descendants(proc.pid), children), 60)
        return proc, tree

    yield _start
    for proc, tree in procs:
        for pid in alive(tree | descendants(proc.pid) | {proc.pid}):
            os.kill(pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("command", "children", "sig"),
    [
        (("demo",), 5, signal.SIGTERM),
        (("demo",), 5, signal.SIGKILL),
        (("run", "--concurrency", "1"), 4, signal.SIGKILL),
    ],
    ids=["demo-sigterm", "demo-sigkill", "run-sigkill"],
)
def test_nothing_outlives_the_command(
    start: object, command: tuple[str, ...], children: int, sig: signal.Signals
) -> None:
    proc, tree = start(*command, children=children)  # type: ignore[operator]
    os.kill(proc.pid, sig)  # the main process only, not its process group
    code = proc.wait(60)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    try:
        wait_for(lambda: not alive(tree), timeout=30, interval=0.1)
    except AssertionError:
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:100] for pid in alive(tree)}
        raise AssertionError(f"still running: {left}") from None


def test_die_with_parent_signals_the_child_when_its_parent_dies() -> None:
    # A middle process starts a grandchild that asked for SIGTERM on its parent's death,
    # then the middle process is killed: the grandchild must stop.
    # Both wait in signal.pause() until a signal ends them.
    script = (
        "import signal, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'from monitor_worker.lifetime import die_with_parent; import signal; "
        'assert die_with_parent(); print("ready", flush=True); signal.pause()\'], '
        "stdout=subprocess.PIPE)\n"
        "assert child.stdout.readline() == b'ready\\n'\n"
        "print(child.pid, flush=True)\n"
        "signal.pause()\n"
    )
    middle = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert middle.stdout is not None
    grandchild = int(middle.stdout.readline())
    try:
        assert alive({grandchild}) == {grandchild}
        middle.kill()
        middle.wait(10)
        middle.stdout.close()
        wait_for(lambda: not alive({grandchild}), timeout=10)
    finally:
        for pid in alive({grandchild}):
            os.kill(pid, signal.SIGKILL)
    assert die_with_parent(0) is True  # signal 0 clears the request; the call reports success
