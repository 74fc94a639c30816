"""Child processes that do not outlive the command that started them.

``monitor-worker run`` and ``demo`` start an embedded server and Celery processes. When the
command is stopped with SIGTERM or SIGINT it stops them itself; when it is killed outright
(SIGKILL, the OOM killer) it cannot, so each child asks the kernel for a signal when its
parent dies (Linux's ``PR_SET_PDEATHSIG``). Elsewhere these functions do nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] | None = getattr(libc, "prctl", None)
    return prctl


def die_with_parent(sig: int = signal.SIGTERM, *, parent: int | None = None) -> bool:
    """Ask for ``sig`` when this process's parent dies; ``False`` where that is not possible.

    ``parent`` is the pid the parent had before the fork, when known: if this process has
    been re-parented already (its parent died before this call), ``sig`` comes at once. The
    signal is tied to the parent *thread* that forked this process, so call it in processes
    started from a parent's main thread.
    """
    prctl = _prctl()
    if prctl is None:
        return False
    parent = os.getppid() if parent is None else parent
    if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before or during the request
        os.kill(os.getpid(), sig)
    return True


def child_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process
    dies. The C function is looked up here, before the fork, so the child only calls it."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread, so the
    command's cleanup runs the same for ``kill``, ``timeout``, systemd and Docker as for
    Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> Any:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
