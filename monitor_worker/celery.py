"""The Celery app: ``celery -A monitor_worker worker`` / ``beat`` find it here.

The package's ``__init__`` does not import this module, so apps that only track never import
Celery. Configuration is built on first use (Celery's ``on_configure``), not at import:
the package defaults from the environment, then ``celeryconfig.py`` from the working
directory when one is there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    beat_embedded_init,
    beat_init,
    before_task_publish,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from .config import Settings
from .errors import ConfigError
from .lifetime import die_with_parent
from .schedule import TASK_NAMES, celery_defaults

log = logging.getLogger("monitor_worker.celery")

app = Celery("monitor_worker", include=["monitor_worker.tasks"])


def load_overrides(directory: Path | None = None) -> dict[str, Any]:
    """Lower-case settings of ``celeryconfig.py`` in ``directory`` (default: the cwd)."""
    path = (directory or Path.cwd()) / "celeryconfig.py"
    if not path.is_file():
        return {}
    spec = importlib.util.spec_from_file_location("celeryconfig", path)
    if spec is None or spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {k: v for k, v in vars(module).items() if k.islower() and not k.startswith("_")}


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    from .thresholds import Thresholds

    try:
        settings = Settings.from_env()
        Thresholds.of(settings)  # the rules file is read once, at start
    except ConfigError as exc:
        # Celery logs and ignores an exception from a signal handler; SystemExit stops the
        # worker (or beat) at start instead of leaving it running on Celery's defaults.
        sys.stderr.write(f"monitor-worker: {exc}\n")
        raise SystemExit(2) from None
    config = celery_defaults(settings)
    config.update(load_overrides())
    sender.conf.update(config)


_IN_BEAT = False


@beat_init.connect
def _beat_started(**_: Any) -> None:
    global _IN_BEAT
    _IN_BEAT = True


_WORKER_PID: int | None = None


@worker_init.connect
def _remember_worker(**_: Any) -> None:
    global _WORKER_PID
    _WORKER_PID = os.getpid()


@beat_embedded_init.connect
@worker_process_init.connect
def _stop_with_the_worker(**_: Any) -> None:
    """A pool child or an embedded beat stops when its worker is killed outright, instead of
    living on unowned (running the beat schedule with nobody to stop it). The solo pool runs
    in the worker's own process, which is left alone."""
    if _WORKER_PID is not None and os.getpid() != _WORKER_PID:
        die_with_parent(signal.SIGTERM, parent=_WORKER_PID)


@before_task_publish.connect
def _beat_heartbeat(sender: str | None = None, **_: Any) -> None:
    """Beat's heartbeat: the time it last sent one of our periodic tasks."""
    if not _IN_BEAT or sender not in TASK_NAMES:
        return
    from . import metrics_monitor
    from .store import REDIS_ERRORS, record_heartbeat

    try:
        record_heartbeat(metrics_monitor.store(), metrics_monitor.settings, "beat", time.time())
    except REDIS_ERRORS as exc:
        log.warning("could not record beat heartbeat: %s", type(exc).__name__)


@worker_process_shutdown.connect
def _flush_on_shutdown(**_: Any) -> None:
    """Billiard children leave through os._exit, which skips atexit: flush here."""
    from . import metrics_monitor

    metrics_monitor.flush(timeout=2.0)


def worker_argv(*, beat: bool, schedule_dir: Path | None = None, concurrency: int = 0) -> list[str]:
    """Arguments for ``app.worker_main``: a worker, with beat embedded when asked."""
    argv = ["worker", "--loglevel=INFO"]
    if beat:
        argv.append("--beat")
        if schedule_dir is not None:
            argv += ["--schedule", str(schedule_dir / "celerybeat-schedule")]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv
