"""A host app's Celery module, instrumented as the README says; ``test_integration_celery``
runs a real worker of it. Each attempt of a task increments a Redis counter first, so the
test can tell when every attempt has run; ``early`` also records when its body started."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Ignore

from monitor_worker.integrations.celery import instrument

app = Celery("hostapp", broker=os.environ.get("TEST_BROKER_URL", "memory://"))
app.conf.update(
    task_default_queue=os.environ.get("TEST_QUEUE", "celery"),
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
instrument(app)

_client: redis.Redis | None = None


def _mark(name: str) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["TEST_MARK_URL"])
    _client.incr(f"{os.environ['TEST_MARK_PREFIX']}{name}")


@app.task
def ok() -> None:
    _mark("attempts")


@app.task
def fail() -> None:
    _mark("attempts")
    raise ValueError("this task always fails")


@app.task(bind=True, max_retries=3)
def retry_once(self: Task[Any, Any]) -> None:
    _mark("attempts")
    if self.request.retries == 0:
        raise self.retry(countdown=0)


@app.task
def ignored() -> None:
    _mark("attempts")
    raise Ignore()


@app.task
def early() -> None:
    _mark("attempts")
    assert _client is not None
    _client.set(f"{os.environ['TEST_MARK_PREFIX']}early_started", repr(time.time()))


@app.task
def later() -> None:
    _mark("attempts")
