"""Alert latency: from the track call that crosses a threshold to the Slack POST, through a
real Celery worker with embedded beat and the default intervals (aggregate 10 s, check 30 s,
deliver 5 s, flush 1 s).

A local HTTP server answers like Slack's webhook (200 "ok") and records when each POST
arrives. The worker (``celery -A monitor_worker worker --beat --concurrency=1``) runs as a
subprocess on a private server, key prefix and task queue. Once beat and the worker are seen,
each sample waits a random time within one check interval (so the crossing falls uniformly
in the beat schedule), tracks 40 requests with 50 % 500s on a fresh endpoint (error rate over
the threshold, min requests 20) and measures from the last track call to the arrival of the
message naming that endpoint. Each sample uses a new endpoint: the throttle is per alert key.

The bound: the flusher pushes within 1 s; ``check_alerts`` reads raw events not aggregated
yet, so the aggregate interval does not add; the next check comes within the check interval;
a check that fires enqueues ``deliver_alerts`` at once. Latency <= 1 s + check interval +
delivery (the queue hop and one POST). ``--quick`` sets MONITOR_CHECK_INTERVAL=5 and takes
2 samples instead of 8.

    .venv/bin/python bench/alert_latency.py [--quick]
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import _common as common

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import read_heartbeats
from monitor_worker.throttle import firing_keys

REQUESTS = 40
GOAL_S = 45.0
DELIVERY_ALLOWANCE_S = 2.0
STARTUP_LIMIT_S = 90.0
STOP_LIMIT_S = 20.0
REPO = Path(__file__).resolve().parent.parent


# -- the Slack stand-in ------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    arrived_mono: float
    arrived_wall: float
    payload: dict[str, Any]


class SlackStandIn:
    """A webhook on 127.0.0.1 answering 200 "ok"; keeps every POST with its arrival time."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.cond = threading.Condition()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived_mono, arrived_wall = time.monotonic(), time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsed": body.decode("utf-8", "replace")}
                with stand_in.cond:
                    stand_in.posts.append(Post(arrived_mono, arrived_wall, payload))
                    stand_in.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/bench"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SlackStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)

    def wait_for(self, needle: str, deadline_mono: float) -> Post | None:
        """The first POST whose text mentions ``needle``, or None at the deadline."""
        with self.cond:
            while True:
                for post in self.posts:
                    if needle in str(post.payload.get("text", "")):
                        return post
                left = deadline_mono - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 1.0))


# -- the worker --------------------------------------------------------------------------------


def worker_env(url: str, webhook: str, check_interval_s: float | None) -> dict[str, str]:
    """This environment without any monitor, Celery or Slack setting, plus the bench's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MONITOR_", "CELERY_")) and k != "SLACK_WEBHOOK_URL"
    }
    run = uuid.uuid4().hex[:12]
    env.update(
        MONITOR_REDIS_URL=url,
        CELERY_BROKER_URL=url,
        MONITOR_KEY_PREFIX=f"mwbench:{run}:",
        MONITOR_TASK_QUEUE=f"mwbench-latency-{run}",
        MONITOR_QUEUES=f"mwbench-absent-{run}",
        SLACK_WEBHOOK_URL=webhook,
        NO_PROXY=",".join(filter(None, (env.get("NO_PROXY"), "127.0.0.1"))),
    )
    if check_interval_s is not None:
        env["MONITOR_CHECK_INTERVAL"] = f"{check_interval_s:g}"
    return env


@contextlib.contextmanager
def celery_worker(env: Mapping[str, str], tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The worker with embedded beat, in its own process group; stopped warm, else killed."""
    log_path = tmp / "worker.log"
    command = [
        sys.executable, "-m", "celery", "-A", "monitor_worker", "worker", "--beat",
        "--concurrency=1", "--loglevel=WARNING", "-s", str(tmp / "beat-schedule"),
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_LIMIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a pool child left behind by a killed parent
        if proc.returncode not in (0, -signal.SIGTERM):
            print(f"worker exited {proc.returncode}; log tail:\n{tail(log_path)}")
        else:
            logged = logged_problems(log_path)
            print(f"worker log: {len(logged)} warning/error line(s)")
            if logged:
                print("\n".join(logged[-20:]))


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def logged_problems(path: Path) -> list[str]:
    """The worker's own WARNING/ERROR/CRITICAL records and tracebacks (not Celery's banner)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    marks = (": WARNING/", ": ERROR/", ": CRITICAL/", "Traceback")
    return [line for line in lines if any(m in line for m in marks)]


def wait_until_up(
    proc: subprocess.Popen[bytes], monitor: MetricsMonitor, log_path: Path
) -> float | None:
    """Seconds until beat sent a task and the worker ran one (both heartbeats), or None."""
    started = time.monotonic()
    deadline = started + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"worker exited {proc.returncode} at start-up; log tail:\n{tail(log_path)}")
            return None
        beats = read_heartbeats(monitor.store(), monitor.settings)
        if beats["beat"] is not None and beats["worker"] is not None:
            return time.monotonic() - started
        time.sleep(0.1)
    print(f"no beat and worker heartbeat within {STARTUP_LIMIT_S:.0f} s; log:\n{tail(log_path)}")
    return None


# -- one sample --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    endpoint: str
    phase_wait_s: float
    latency_s: float | None
    to_check_s: float | None  # last track call -> the check that fired
    check_to_post_s: float | None  # that check -> the POST


def sample(
    n: int, monitor: MetricsMonitor, slack: SlackStandIn, phase_wait_s: float, limit_s: float
) -> Sample:
    endpoint = f"/bench/latency/{uuid.uuid4().hex[:10]}/s{n}/"
    time.sleep(phase_wait_s)  # places the crossing at a random point of the beat schedule
    for i in range(REQUESTS):  # every other request a 500: 50 % errors
        monitor.track_api_request(endpoint, 0.05, 500 if i % 2 == 0 else 200)
    tracked_mono, tracked_wall = time.monotonic(), time.time()
    post = slack.wait_for(endpoint, tracked_mono + limit_s)
    if post is None:
        return Sample(endpoint, phase_wait_s, None, None, None)
    since = firing_keys(monitor.store(), monitor.settings).get(f"error_rate:{endpoint}")
    to_check = None if since is None else since - tracked_wall
    to_post = None if since is None else post.arrived_wall - since
    return Sample(endpoint, phase_wait_s, post.arrived_mono - tracked_mono, to_check, to_post)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    args = common.parse_args(__doc__ or "")
    report = common.Report("alert_latency")
    count = 2 if args.quick else 8
    check_override = 5.0 if args.quick else None
    with common.redis_server() as url, SlackStandIn() as slack:
        env = worker_env(url, slack.url, check_override)
        settings = Settings.from_env(env)
        print(
            f"intervals: aggregate {settings.aggregate_interval_s:g} s, check "
            f"{settings.check_interval_s:g} s, deliver {settings.deliver_interval_s:g} s, "
            f"flush {settings.flush_interval_s:g} s"
        )
        if args.quick:
            print("QUICK MODE: MONITOR_CHECK_INTERVAL=5 (not the default 30 s); 2 samples")
        bound_s = settings.flush_interval_s + settings.check_interval_s
        print(
            f"bound: flush {settings.flush_interval_s:g} s + check interval "
            f"{settings.check_interval_s:g} s + delivery (check_alerts enqueues deliver_alerts "
            f"at once) = {bound_s:g} s + delivery; allowing {DELIVERY_ALLOWANCE_S:g} s for "
            f"delivery: {bound_s + DELIVERY_ALLOWANCE_S:g} s; goal <= {GOAL_S:g} s"
        )
        monitor = MetricsMonitor(settings=settings)
        try:
            with tempfile.TemporaryDirectory(prefix="mwbench-latency-") as tmp:
                samples = run_worker(env, Path(tmp), monitor, slack, count, report)
        finally:
            monitor.close()
            cleanup(monitor, env)
    latencies = [s.latency_s for s in samples if s.latency_s is not None]
    report.check(len(latencies) == count, f"{count - len(latencies)} alert(s) never arrived")
    rows = [
        (s.endpoint, f"{s.phase_wait_s:.1f} s", seconds(s.latency_s), seconds(s.to_check_s),
         seconds(s.check_to_post_s))
        for s in samples
    ]  # fmt: skip
    common.print_table(
        f"alert latency, {count} samples (last track call -> Slack POST)",
        ("endpoint", "phase wait", "latency", "track->check", "check->POST"),
        rows,
    )
    if latencies:
        worst = max(latencies)
        limit = bound_s + DELIVERY_ALLOWANCE_S
        mode = " (quick: check 5 s)" if args.quick else ""
        report.figure(f"median latency{mode}", f"{common.median(latencies):.2f} s")
        report.figure(f"max latency{mode}", f"{worst:.2f} s", f"<= {GOAL_S:g} s", worst <= GOAL_S)
        report.figure(
            "max within bound",
            f"{worst:.2f} s",
            f"<= {settings.flush_interval_s:g}+{settings.check_interval_s:g}"
            f"+{DELIVERY_ALLOWANCE_S:g} s",
            worst <= limit,
        )
        posts = [s.check_to_post_s for s in samples if s.check_to_post_s is not None]
        if posts:
            report.figure("max check -> POST", f"{max(posts):.2f} s")
    return report.finish(args)


def run_worker(
    env: Mapping[str, str],
    tmp: Path,
    monitor: MetricsMonitor,
    slack: SlackStandIn,
    count: int,
    report: common.Report,
) -> list[Sample]:
    settings = monitor.settings
    limit_s = settings.flush_interval_s + 2 * settings.check_interval_s + 30.0
    rng = random.Random()
    samples: list[Sample] = []
    with celery_worker(env, tmp) as proc:
        up_s = wait_until_up(proc, monitor, tmp / "worker.log")
        if not report.check(up_s is not None, "the worker with beat did not come up"):
            return samples
        print(f"worker and beat up after {up_s:.1f} s")
        for n in range(count):
            phase_wait_s = rng.uniform(0.0, settings.check_interval_s)
            s = sample(n, monitor, slack, phase_wait_s, limit_s)
            print(
                f"sample {n + 1}/{count}: waited {phase_wait_s:.1f} s, latency "
                f"{seconds(s.latency_s)}",
                flush=True,
            )
            samples.append(s)
            if proc.poll() is not None:
                report.check(False, f"the worker exited {proc.returncode} during the run")
                print(tail(tmp / "worker.log"))
                break
    return samples


def cleanup(monitor: MetricsMonitor, env: Mapping[str, str]) -> None:
    """Delete the run's keys and its task queue (only matters on a shared server)."""
    client = monitor.store()
    common.delete_prefix(client, monitor.settings.key_prefix)
    queue = env["MONITOR_TASK_QUEUE"]
    client.delete(queue, f"_kombu.binding.{queue}")


if __name__ == "__main__":
    raise SystemExit(main())
