"""``monitor-worker run`` on the embedded default: a real Valkey, worker and beat in one
process, found by a local app through the URL file, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import connect, pending_count

from .conftest import free_port
from .helpers import wait_for


@pytest.mark.timeout(120)
def test_run_starts_the_embedded_server_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
    env.pop("SLACK_WEBHOOK_URL", None)
    env.update(XDG_DATA_HOME=str(tmp_path), MONITOR_AGGREGATE_INTERVAL="1")
    web_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor_worker.cli",
            "run",
            "--concurrency",
            "1",
            "--web-port",
            str(web_port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("MONITOR_REDIS_URL=redis://:"), first
        url = first.split("=", 1)[1]
        assert proc.stdout.readline().startswith("Set MONITOR_REDIS_URL")
        dashboard = proc.stdout.readline().strip()
        assert dashboard == f"web dashboard: http://127.0.0.1:{web_port}/"
        url_file = tmp_path / "monitor-worker" / "redis-url"
        assert url_file.read_text().strip() == url
        assert url_file.stat().st_mode & 0o077 == 0
        # a local app with no MONITOR_REDIS_URL finds the server through the URL file
        app_settings = Settings.from_env({"XDG_DATA_HOME": str(tmp_path)})
        assert app_settings.redis_url == url
        monitor = MetricsMonitor(settings=app_settings)
        for i in range(300):
            monitor.track_api_request("/api/run/", 0.1, 500 if i % 3 == 0 else 200)
        assert monitor.flush(10)
        client = connect(app_settings)
        wait_for(lambda: pending_count(client, app_settings) == 0, timeout=60, interval=0.2)
        summary = monitor.get_metrics_summary()
        assert summary["api"]["/api/run/"]["total_requests"] == 300
        assert summary["api"]["/api/run/"]["error_count"] == 100
        # the dashboard started beside the worker reads the same store
        shown = wait_for(lambda: _get_json(f"http://127.0.0.1:{web_port}/api/v1/summary"))
        assert shown["api"]["/api/run/"] == summary["api"]["/api/run/"]
        monitor.close()
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0
    assert not (tmp_path / "monitor-worker" / "redis-url").exists()
    with socket.socket() as probe:  # the dashboard stopped with it
        probe.bind(("127.0.0.1", web_port))


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        response = requests.get(url, timeout=5)
    except requests.ConnectionError:
        return None
    return response.json() if response.ok else None


def test_a_taken_dashboard_port_warns_once_and_runs_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from monitor_worker.web import server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert server.start_beside(port, os.environ) is None
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--web-port" in lines[0]
