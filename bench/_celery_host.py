"""The host app of ``hook_cost.py``'s Celery round trips: instrumented when
``BENCH_INSTRUMENT=1``, bare otherwise; broker and result backend from ``BENCH_BROKER_URL``."""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "benchhost", broker=os.environ["BENCH_BROKER_URL"], backend=os.environ["BENCH_BROKER_URL"]
)
app.conf.update(
    task_default_queue=os.environ["BENCH_QUEUE"],
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if os.environ.get("BENCH_INSTRUMENT") == "1":
    from monitor_worker.integrations.celery import instrument

    instrument(app)


@app.task
def add(a: int, b: int) -> int:
    return a + b
