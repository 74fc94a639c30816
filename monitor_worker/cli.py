"""The ``monitor-worker`` command.

Exit codes: 0 ok; 1 an alert is firing (``check --fail-on-alert``) or unhealthy (``health``);
2 the store or broker is unreachable, or the configuration is invalid (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import Settings, parse_duration, redact_url, redact_webhook, state_dir
from .errors import MonitorError, QueueInspectionError
from .monitor import MetricsMonitor
from .report import format_summary
from .rules import format_value, rules_can_fire
from .store import REDIS_ERRORS, describe_error

log = logging.getLogger("monitor_worker.cli")
JSON_HELP = "print JSON only on stdout"
NOW_MAX = 1e11  # the API's bound for ?now= (web/app.py)


def _json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def _monitor() -> MetricsMonitor:
    from . import metrics_monitor

    return metrics_monitor


# -- commands -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Worker and beat in one process; an embedded Valkey when no Redis URL is configured."""
    from .embedded import EmbeddedRedis
    from .web import server as web

    settings = Settings.from_env()
    server: EmbeddedRedis | None = None
    if not settings.redis_url_explicit and not settings.broker_url_explicit:
        server = EmbeddedRedis().start()
        # The Celery app and its pool processes read their settings from the environment.
        os.environ["MONITOR_REDIS_URL"] = server.url
        os.environ["CELERY_BROKER_URL"] = server.url
        sys.stdout.write(f"MONITOR_REDIS_URL={server.url}\n")
        sys.stdout.write(
            "Set MONITOR_REDIS_URL to this in your app (local apps find it on their own).\n"
        )
        sys.stdout.flush()
    dashboard = None if args.no_web else web.start_beside(args.web_port, os.environ)
    try:
        from .celery import app, worker_argv

        app.worker_main(
            worker_argv(beat=True, schedule_dir=state_dir(), concurrency=args.concurrency)
        )
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    finally:
        web.stop(dashboard)
        if server is not None:
            server.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        duration_s=args.duration, web_port=None if args.no_web else args.web_port, slack=args.slack
    )


def cmd_web(args: argparse.Namespace) -> int:
    """The dashboard server in the foreground."""
    from .web import server as web

    settings = Settings.from_env()
    try:
        web.serve(settings, args.host, args.port, certfile=args.certfile, keyfile=args.keyfile)
    except OSError as exc:
        sys.stderr.write(
            f"monitor-worker: web: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}\n"
        )
        return 2
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    summary = _monitor().get_metrics_summary(now=args.now)
    if args.json:
        _json(summary)
    else:
        sys.stdout.write(format_summary(summary))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    result = _monitor().check_alerts()
    if args.json:
        _json(result)
    else:
        rows = [
            (kind, entry["key"], entry.get("title") or entry.get("error") or "")
            for kind in ("fired", "resolved", "throttled", "silenced", "errors")
            for entry in result[kind]
        ]
        _table(rows)
        if not any(result.values()):
            sys.stdout.write("all quiet\n")
    if args.fail_on_alert and (result["fired"] or result["throttled"]):
        return 1
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from . import alerting

    monitor = _monitor()
    firing = alerting.firing_alerts(monitor.store(), monitor.settings)
    if args.json:
        _json(firing)
        return 0
    if not firing:
        sys.stdout.write("no alert is firing\n")
    _table(
        [
            (
                alert["key"],
                f"since {_when(alert.get('since'))}",
                f"last sent {_when(alert.get('last_sent'))}",
                f"value {format_value(alert['key'], alert.get('last_value'))}",
                f"silenced by {alert['silenced']}" if alert.get("silenced") else "",
            )
            for alert in firing
        ]
    )
    return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    """``rows`` as columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def _when(ts: Any) -> str:
    if not ts:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


def cmd_queues(args: argparse.Namespace) -> int:
    from . import queues

    settings = _monitor().settings
    url = settings.inspected_broker_url
    lengths = queues.inspect_queues(
        url, settings.queues, transport_options=settings.queues_broker_transport_options
    )
    report = queues.queues_json(lengths, url, time.time())
    if args.json:
        _json(report)
        return 0
    sys.stdout.write(f"broker: {redact_url(url)}\n")
    for name, q in report.items():
        exists = "" if q["exists"] else "  (missing)"
        prio = f"  priorities {q['priorities']}" if q.get("priorities") else ""
        sys.stdout.write(f"{name:<30} {q['length']:>8}{exists}{prio}\n")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    from . import throttle

    monitor = _monitor()
    duration = parse_duration(args.duration)
    firing = throttle.firing_keys(monitor.store(), monitor.settings)
    if not rules_can_fire(args.key) and not any(
        throttle.silence_matches(args.key, key) for key in firing
    ):
        sys.stderr.write(
            f"monitor-worker: warning: {args.key!r} matches no alert the rules can raise "
            "(keys look like 'error_rate:/api/*', 'slow_response:/api/x/', 'payment_failures', "
            "'celery_queue:NAME', 'task_failure_rate:NAME'; see `monitor-worker alerts`); "
            "silenced anyway\n"
        )
    throttle.add_silence(
        monitor.store(),
        monitor.settings,
        args.key,
        duration,
        args.reason or "",
        time.time(),
        created_by="cli",
    )
    sys.stdout.write(f"silenced {args.key} for {args.duration}\n")
    return 0


def cmd_silences(args: argparse.Namespace) -> int:
    from . import throttle

    monitor = _monitor()
    silences = throttle.list_silences(monitor.store(), monitor.settings, time.time())
    if args.json:
        _json(silences)
        return 0
    if not silences:
        sys.stdout.write("no silences\n")
    _table(
        [
            (
                s["pattern"],
                f"until {_when(s.get('until'))}",
                f"by {s.get('created_by') or 'unknown'}",
                s.get("reason") or "",
            )
            for s in silences
        ]
    )
    return 0


def cmd_unsilence(args: argparse.Namespace) -> int:
    from . import throttle

    monitor = _monitor()
    if throttle.remove_silence(monitor.store(), monitor.settings, args.key):
        sys.stdout.write(f"removed silence {args.key}\n")
        return 0
    sys.stdout.write(f"no silence {args.key}\n")
    return 1


def cmd_test_slack(args: argparse.Namespace) -> int:
    from . import slack
    from .errors import SlackDeliveryError

    settings = _monitor().settings
    notice = slack.Notice(
        key="test",
        status="firing",
        title="monitor-worker test message",
        note="If you can read this, alerts from this deployment reach this channel.",
    )
    payload = slack.build_payload(
        [notice], service=settings.service_name, environment=settings.environment
    )
    if not settings.slack_webhook_url:
        sys.stdout.write("SLACK_WEBHOOK_URL is not set; alerts go to the console:\n")
        sys.stdout.write(slack.render_console(payload) + "\n")
        return 1
    try:
        slack.deliver(payload, settings.slack_webhook_url, timeout_s=settings.slack_timeout_s)
    except SlackDeliveryError as exc:
        sys.stdout.write(f"Slack refused the test message: {exc}\n")
        return 1
    sys.stdout.write(
        f"Slack accepted the test message ({redact_webhook(settings.slack_webhook_url)})\n"
    )
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from . import checks

    report = checks.health(_monitor(), time.time())
    if args.json:
        _json(report)
    else:
        for name, value in report.items():
            sys.stdout.write(f"{name:<20} {value}\n")
    return 0 if report["healthy"] else 1


def cmd_rules(args: argparse.Namespace) -> int:
    from .thresholds import Thresholds

    th = Thresholds.of(_monitor().settings)
    rows = th.rows()
    if args.json:
        _json({"file": th.file.path or None, "rules": rows})
        return 0
    sys.stdout.write(f"rules file: {th.file.path or '(none)'}\n")
    sys.stdout.write(f"{'section':<9} {'target':<40} {'setting':<22} {'value':>10}  source\n")
    for row in rows:
        sys.stdout.write(
            f"{row['section']:<9} {row['target'][:40]:<40} {row['setting']:<22} "
            f"{row['value']!s:>10}  {row['source']}\n"
        )
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    result = _monitor().aggregate()
    sys.stdout.write(f"aggregated {result.events} events in {result.batches} batches\n")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from .report import format_history

    monitor = _monitor()
    if args.action == "migrate":
        return _migrate(monitor)
    now = time.time()
    since = _time_arg(args.since, now, "--since", parse_duration)
    until = None if args.until is None else _time_arg(args.until, now, "--until", parse_duration)
    history = monitor.get_history(since, until, step=args.step, endpoint=args.endpoint, now=now)
    if args.json:
        _json(history)
    else:
        sys.stdout.write(format_history(history))
    return 0


def _time_arg(text: str, now: float, name: str, parse: Callable[[str], float]) -> float:
    """A duration ago (``24h``, ``7d``) or, as a bare number, unix seconds."""
    try:
        return float(text) if text.strip().replace(".", "", 1).isdigit() else now - parse(text)
    except ValueError:
        raise ValueError(
            f"{name} must be a duration ago (90m, 24h, 7d) or unix seconds (got {text!r})"
        ) from None


def _migrate(monitor: MetricsMonitor) -> int:
    settings = monitor.settings
    if not settings.history_url:
        sys.stdout.write(
            "history is kept in the metrics store (Redis): nothing to migrate; set "
            "MONITOR_HISTORY_URL=postgresql://... to keep it in PostgreSQL\n"
        )
        return 0
    from .history.pg_schema import migrate

    applied = migrate(settings)
    if applied:
        sys.stdout.write(f"applied migrations {', '.join(map(str, applied))}\n")
    else:
        sys.stdout.write("the history schema is up to date\n")
    return 0


# -- plumbing -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor-worker", description="Watch a web service and alert on Slack."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Any:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        return p

    def web_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--web-port", type=_port, default=8350, help="dashboard port (default 8350)")
        p.add_argument("--no-web", action="store_true", help="do not start the dashboard")

    p = add("run", cmd_run, "worker and beat in one process (embedded Valkey by default)")
    p.add_argument("--concurrency", type=int, default=0, help="worker processes (default: CPUs)")
    web_options(p)
    p = add("demo", cmd_demo, "run with synthetic traffic that trips the alert rules")
    p.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (default: until Ctrl-C)"
    )
    p.add_argument(
        "--slack",
        action="store_true",
        help="send the synthetic alerts to SLACK_WEBHOOK_URL (default: the console only)",
    )
    web_options(p)
    p = add("web", cmd_web, "the dashboard, JSON API and /metrics (http://127.0.0.1:8350/)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8350, help="port (default 8350)")
    p.add_argument("--certfile", default=None, help="TLS certificate (PEM), with --keyfile")
    p.add_argument("--keyfile", default=None, help="TLS private key (PEM), with --certfile")
    p = add("summary", cmd_summary, "the current window")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument(
        "--now",
        type=_unix_time,
        default=None,
        metavar="TS",
        help="evaluate the window ending then (unix time in seconds, as from `date +%%s`)",
    )
    p = add("check", cmd_check, "aggregate, inspect queues, evaluate rules, deliver alerts")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--fail-on-alert", action="store_true", help="exit 1 when an alert is firing")
    p = add("alerts", cmd_alerts, "alerts firing now")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p = add("queues", cmd_queues, "broker queue lengths")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p = add("silence", cmd_silence, "silence an alert key or a prefix ending in *")
    p.add_argument(
        "key", help="an alert key, or a prefix ending in * (quote it: 'error_rate:/api/*')"
    )
    p.add_argument("--for", dest="duration", required=True, help="30s, 15m, 2h, 1d")
    p.add_argument("--reason", default="", help="why, shown with the silence")
    p = add("silences", cmd_silences, "active silences")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p = add("unsilence", cmd_unsilence, "remove a silence")
    p.add_argument("key")
    add("test-slack", cmd_test_slack, "send one test message to SLACK_WEBHOOK_URL")
    p = add("health", cmd_health, "heartbeats, backlog and outbox (exit 1 when unhealthy)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    add("aggregate", cmd_aggregate, "drain pending events into the window now")
    p = add("history", cmd_history, "archived minutes, hours and days; 'migrate' the schema")
    p.add_argument("action", nargs="?", choices=["show", "migrate"], default="show")
    p.add_argument("--since", default="24h", help="a duration ago (24h, 7d) or unix seconds")
    p.add_argument("--until", default=None, help="a duration ago or unix seconds (default: now)")
    p.add_argument("--step", default="1h", help="1m, 1h, 6h or 1d (default 1h)")
    p.add_argument("--endpoint", default=None, help="only this endpoint in the api section")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p = add("rules", cmd_rules, "the effective thresholds, each with where it came from")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    return parser


def _unix_time(text: str) -> float:
    """A unix time in seconds, by the rule of the API's ``?now=`` (0 < now <= 1e11)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= NOW_MAX):
        raise argparse.ArgumentTypeError(
            f"a unix time in seconds, > 0 and <= {NOW_MAX:g} (got {text!r})"
        )
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port number 1-65535 (got {text!r})")
    return port


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # urllib3 logs request paths at DEBUG; the path of a Slack webhook is its secret.
    logging.getLogger("urllib3").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command != "demo":
            from .thresholds import Thresholds

            Thresholds.of(Settings.from_env())  # a bad rules file fails at start
        return int(args.func(args))
    except (MonitorError, QueueInspectionError) as exc:
        sys.stderr.write(f"monitor-worker: {exc}\n")
        return 2
    except REDIS_ERRORS as exc:
        sys.stderr.write(f"monitor-worker: {describe_error(_monitor().settings, exc)}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"monitor-worker: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
