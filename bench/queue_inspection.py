"""Queue inspection through kombu: 200 queues in one pass, on Redis (pipelined, with
priority lists) and on RabbitMQ (a passive declare per queue on one connection).

    .venv/bin/python bench/queue_inspection.py [--quick]

Goal: 200 queues in <= 1 s. RabbitMQ is 127.0.0.1:5672 (guest/guest) or
``MONITOR_BENCH_AMQP_URL``; the RabbitMQ row is skipped (said so) where it is unreachable.
"""

from __future__ import annotations

import os
import time
import uuid

import _common as common
from kombu import Connection
from kombu import Queue as KQueue

from monitor_worker.queues import inspect_queues

QUEUES = 200
PRIORITY_STEPS = [0, 3, 6, 9]
SEP = "\x06\x16"


def time_inspection(url: str, names: list[str], repeats: int, **kwargs: object) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = inspect_queues(url, names, **kwargs)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
        assert len(got) == len(names)
    return times


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("queue_inspection")
    repeats = 3 if args.quick else 9
    token = uuid.uuid4().hex[:8]
    names = [f"mwbench-q-{token}-{i}" for i in range(QUEUES)]
    rows = []
    with common.redis_server() as url:
        client = common.client_for(url)
        try:
            pipe = client.pipeline(transaction=False)
            for i, name in enumerate(names):  # every queue holds messages at two priorities
                pipe.lpush(name, *[b"{}"] * (1 + i % 3))
                pipe.lpush(f"{name}{SEP}6", b"{}")
            pipe.execute()
            options = {"priority_steps": PRIORITY_STEPS}
            times = time_inspection(url, names, repeats, transport_options=options)
            got = inspect_queues(url, names, transport_options=options)
            report.check(
                all(got[n].length == 2 + i % 3 for i, n in enumerate(names)),
                "Redis lengths include every priority list",
            )
        finally:
            client.delete(*names, *[f"{n}{SEP}6" for n in names])
            client.close()
    med = common.median(times)
    rows.append(("redis (4 priority steps)", f"{med * 1000:.1f} ms", f"{max(times) * 1000:.1f}"))
    report.figure("200 Redis queues, median", f"{med * 1000:.1f} ms", "<= 1 s", med <= 1.0)

    amqp = os.environ.get("MONITOR_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        with Connection(amqp, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            for name in names:
                KQueue(name, durable=False, auto_delete=False)(channel).declare()
            channel.close()
    except OSError as exc:
        print(f"RabbitMQ at {amqp.split('@')[-1]} unreachable ({exc}); its row is skipped")
    else:
        try:
            times = time_inspection(amqp, names, repeats)
        finally:
            with Connection(amqp, connect_timeout=3) as conn:
                channel = conn.channel()
                for name in names:
                    channel.queue_delete(name)
        med = common.median(times)
        rows.append(("rabbitmq", f"{med * 1000:.1f} ms", f"{max(times) * 1000:.1f}"))
        report.figure("200 RabbitMQ queues, median", f"{med * 1000:.1f} ms", "<= 1 s", med <= 1.0)
    common.print_table(
        f"inspecting {QUEUES} queues in one pass ({repeats} runs)",
        ("broker", "median", "max ms"),
        rows,
    )
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
