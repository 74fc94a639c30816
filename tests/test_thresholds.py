"""The rules file: per-target thresholds over the settings, their errors, their sources, and
the rules of tasks, task queues, databases, caches and custom metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor_worker import cli
from monitor_worker.config import Settings
from monitor_worker.errors import ConfigError
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.rules import FIRING, INSUFFICIENT, NO_TRAFFIC, OK, RuleResult, evaluate
from monitor_worker.thresholds import RulesFile, Thresholds, parse

from .helpers import endpoint_stats, summary

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000.0

RULES = """\
[endpoint."/api/reports/<int:pk>/"]   # error_rate and slow_response rules of one endpoint
error_rate_percent = 10
p95_seconds = 5.0
min_requests = 50

[endpoint."/api/health/"]
enabled = false

[task."billing.charge"]
failure_rate_percent = 1
min_runs = 5

[queue."emails"]
max_length = 1000
p95_wait_seconds = 300

[db."default"]
p95_seconds = 0.2

[cache."default"]
min_hit_rate_percent = 80
min_lookups = 500

[metric."pdf.render_seconds"]
p95_above = 8.0
min_count = 10

[metric."email.sent"]
ok_rate_below_percent = 95
min_count = 20
"""


def _th(text: str = RULES, **settings: Any) -> Thresholds:
    return Thresholds(Settings(**settings), parse(text, "rules.toml"))


def _by_key(results: list[RuleResult]) -> dict[str, RuleResult]:
    return {r.key: r for r in results}


def _task(runs: int, failures: int) -> dict[str, Any]:
    return {
        "runs": runs,
        "failures": failures,
        "failure_rate": 100.0 * failures / runs,
        "retries": 0,
        "avg_runtime": 0.1,
        "p95_runtime": 0.2,
        "avg_queue_wait": None,
        "p95_queue_wait": None,
        "queue": "celery",
    }


def _value(count: int, p95: float, avg: float = 1.0, top: float = 1.0) -> dict[str, Any]:
    return {"kind": "value", "count": count, "avg": avg, "p95": p95, "max": top}


def _ratio(count: int, ok: int) -> dict[str, Any]:
    return {"kind": "ratio", "count": count, "ok": ok, "ok_rate": 100.0 * ok / count}


# (alert key, summary part that breaks only the file's threshold, the same part back within)
OVERRIDES = [
    (
        "error_rate:/api/reports/<int:pk>/",
        {"api": {"/api/reports/<int:pk>/": endpoint_stats(total=60, errors=7)}},  # 11.7 %
        {"api": {"/api/reports/<int:pk>/": endpoint_stats(total=60, errors=4)}},  # 6.7 % < 10 %
    ),
    (
        "slow_response:/api/reports/<int:pk>/",
        {"api": {"/api/reports/<int:pk>/": endpoint_stats(total=60, fast=0, p95=6.0)}},
        {"api": {"/api/reports/<int:pk>/": endpoint_stats(total=60, fast=0, p95=3.0)}},
    ),
    (
        "task_failure_rate:billing.charge",
        {"tasks": {"billing.charge": _task(6, 1)}},  # 16 % of 6 runs: default needs 10 runs
        {"tasks": {"billing.charge": _task(600, 1)}},
    ),
    (
        "task_queue_wait:emails",
        {"task_queues": {"emails": {"tasks": 3, "avg_queue_wait": 1, "p95_queue_wait": 400.0}}},
        {"task_queues": {"emails": {"tasks": 3, "avg_queue_wait": 1, "p95_queue_wait": 200.0}}},
    ),
    (
        "celery_queue:emails",
        {"celery": {"emails": {"length": 1500}}},
        {"celery": {"emails": {"length": 500}}},  # over the default 100, under the file's 1000
    ),
    (
        "db_slow:default",
        {
            "db": {
                "default": {"queries": 9, "errors": 0, "avg_query_time": 0.1, "p95_query_time": 0.3}
            }
        },
        {
            "db": {
                "default": {"queries": 9, "errors": 0, "avg_query_time": 0.1, "p95_query_time": 0.1}
            }
        },
    ),
    (
        "cache_hit_rate:default",
        {"cache": {"default": {"lookups": 600, "hits": 420, "hit_rate": 70.0}}},
        {"cache": {"default": {"lookups": 600, "hits": 540, "hit_rate": 90.0}}},
    ),
    (
        "metric:pdf.render_seconds",
        {"metrics": {"pdf.render_seconds": _value(10, p95=9.0)}},
        {"metrics": {"pdf.render_seconds": _value(10, p95=7.0)}},
    ),
    (
        "metric:email.sent",
        {"metrics": {"email.sent": _ratio(20, 18)}},
        {"metrics": {"email.sent": _ratio(20, 20)}},
    ),
]


@pytest.mark.parametrize(("key", "breaking", "within"), OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_each_override_fires_and_resolves(
    key: str, breaking: dict[str, Any], within: dict[str, Any]
) -> None:
    """Each breaking part is within the default threshold, or each part within the file's
    threshold breaks the default one: only the file's value tells them apart."""
    th = _th()
    fired = _by_key(evaluate(summary(NOW, **breaking), th.settings, NOW, thresholds=th))[key]
    assert fired.state == FIRING, fired
    assert fired.notice is not None and fired.notice.status == "firing"
    back = _by_key(evaluate(summary(NOW, **within), th.settings, NOW, firing={key}, thresholds=th))[
        key
    ]
    assert back.state == OK, back
    assert back.notice is not None and back.notice.status == "resolved"


def test_without_the_file_the_defaults_decide() -> None:
    th = Thresholds(Settings())
    results = _by_key(
        evaluate(
            summary(
                NOW,
                tasks={"billing.charge": _task(6, 1)},
                db={
                    "default": {
                        "queries": 1,
                        "errors": 0,
                        "avg_query_time": 1,
                        "p95_query_time": 0.3,
                    }
                },
                cache={"default": {"lookups": 600, "hits": 1, "hit_rate": 0.2}},
                metrics={"pdf.render_seconds": _value(100, p95=100.0)},
                celery={"emails": {"length": 500}},
            ),
            th.settings,
            NOW,
            thresholds=th,
        )
    )
    assert results["task_failure_rate:billing.charge"].state == INSUFFICIENT  # 6 < 10 runs
    assert results["db_slow:default"].state == OK  # 0.3 s < 0.5 s
    assert results["cache_hit_rate:default"].state == INSUFFICIENT  # the rule is off by default
    assert "metric:pdf.render_seconds" not in results  # a metric has no rule without the file
    assert results["celery_queue:emails"].state == FIRING


def test_defaults_fire_tasks_and_db() -> None:
    th = Thresholds(Settings(cache_hit_rate_min=50))
    results = _by_key(
        evaluate(
            summary(
                NOW,
                tasks={"app.t": _task(65, 10)},
                task_queues={"celery": {"tasks": 1, "avg_queue_wait": 90, "p95_queue_wait": 90.0}},
                db={
                    "default": {
                        "queries": 1,
                        "errors": 0,
                        "avg_query_time": 1,
                        "p95_query_time": 0.6,
                    }
                },
                cache={"default": {"lookups": 100, "hits": 10, "hit_rate": 10.0}},
            ),
            th.settings,
            NOW,
            thresholds=th,
        )
    )
    for key in ("task_failure_rate:app.t", "task_queue_wait:celery", "db_slow:default",
                "cache_hit_rate:default"):  # fmt: skip
        assert results[key].state == FIRING, results[key]


def test_disabled_targets_fire_nothing_and_resolve_what_fired() -> None:
    th = _th()
    results = _by_key(
        evaluate(
            summary(NOW, api={"/api/health/": endpoint_stats(total=100, errors=100)}),
            th.settings,
            NOW,
            firing={"error_rate:/api/health/"},
            thresholds=th,
        )
    )
    assert results["error_rate:/api/health/"].state == OK
    assert results["error_rate:/api/health/"].notice.note == "disabled"  # type: ignore[union-attr]
    assert "slow_response:/api/health/" not in results


def test_a_firing_subject_without_data_resolves_as_no_traffic() -> None:
    results = _by_key(
        evaluate(
            summary(NOW),
            Settings(),
            NOW,
            firing={"task_failure_rate:gone", "db_slow:old", "metric:x"},
            thresholds=Thresholds(Settings()),
        )
    )
    for key in ("task_failure_rate:gone", "db_slow:old", "metric:x"):
        assert results[key].state == NO_TRAFFIC


BAD_FILES = [
    ("[tasks.x]\nmin_runs = 1\n", 1, "tasks", "unknown section"),
    ('[task."a"]\nmin_runs = 1\nmin_run = 2\n', 3, 'task."a".min_run', "unknown field"),
    ('[task."a"]\n\n  min_runs = "5"\n', 3, 'task."a".min_runs', "whole number"),
    ('[task."a"]\nmin_runs = 2.5\n', 2, 'task."a".min_runs', "whole number"),
    ('[db."x"]\np95_seconds = -0.1\n', 2, 'db."x".p95_seconds', ">= 0"),
    ('[cache."x"]\nmin_hit_rate_percent = 101\n', 2, 'cache."x".min_hit_rate_percent', "0 to 100"),
    ('[endpoint."/x/"]\nenabled = "no"\n', 2, 'endpoint."/x/".enabled', "true or false"),
    ('[queue."q"]\nmax_length = true\n', 2, 'queue."q".max_length', "whole number"),
    (
        '[metric."m"]\np95_above = 1\nmin_count = 3\nok_rate_below_percent = 90\n',
        4,
        'metric."m".ok_rate_below_percent',
        "does not fit a value metric",
    ),
    ('# rules\n[task."a"\nmin_runs = 1\n', 2, "not valid TOML", "not valid TOML"),
    ("[task]\nmin_runs = 5\n", 2, 'task."min_runs"', "must be a table"),
]


@pytest.mark.parametrize(("text", "line", "where", "why"), BAD_FILES, ids=[b[3] for b in BAD_FILES])
def test_bad_file_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, where: str, why: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Thresholds.of(Settings(rules_file=str(path)))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert where in message and why in message, message


def test_bad_file_fails_every_cli_command_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[db."default"]\np95_seconds = "fast"\n')
    monkeypatch.setenv("MONITOR_RULES_FILE", str(path))
    for argv in (["rules"], ["summary"], ["check"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"{path}:2: " in err and "p95_seconds" in err
    monkeypatch.setenv("MONITOR_RULES_FILE", str(tmp_path / "missing.toml"))
    assert cli.main(["rules"]) == 2
    assert "MONITOR_RULES_FILE" in capsys.readouterr().err


def test_rules_json_shows_where_each_threshold_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    monkeypatch.setenv("MONITOR_RULES_FILE", str(path))
    monkeypatch.setenv("MONITOR_MIN_TASK_RUNS", "7")
    assert cli.main(["rules", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["file"] == str(path)
    rows = {
        (r["section"], r["target"], r["setting"]): (r["value"], r["source"]) for r in out["rules"]
    }
    assert rows["task", "*", "min_runs"] == (7, "env")
    assert rows["task", "*", "failure_rate_percent"] == (10.0, "default")
    assert rows["task", "billing.charge", "min_runs"] == (5, "file")
    assert rows["queue", "emails", "max_length"] == (1000, "file")
    assert rows["endpoint", "/api/reports/<int:pk>/", "p95_seconds"] == (5.0, "file")
    assert rows["endpoint", "/api/health/", "enabled"] == (False, "file")
    assert rows["endpoint", "/api/health/", "min_requests"] == (20, "default")
    assert rows["metric", "email.sent", "ok_rate_below_percent"] == (95, "file")
    assert cli.main(["rules"]) == 0
    text = capsys.readouterr().out
    assert "billing.charge" in text and "file" in text and "env" in text


def test_class_attribute_is_a_source_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Strict(MetricsMonitor):
        TASK_FAILURE_RATE_THRESHOLD = 2.0
        DB_P95_THRESHOLD = 0.1

    monkeypatch.setenv("MONITOR_DB_P95_THRESHOLD", "0.3")
    settings = Strict().settings
    rows = {
        (r["section"], r["target"], r["setting"]): (r["value"], r["source"])
        for r in Thresholds(settings, RulesFile()).rows()
    }
    assert rows["task", "*", "failure_rate_percent"] == (2.0, "class")
    assert rows["db", "*", "p95_seconds"] == (0.3, "env")
    assert Strict.TASK_FAILURE_RATE_THRESHOLD == 2.0


@pytest.mark.parametrize(
    ("avg", "top", "state", "value"),
    [(1.0, 150.0, FIRING, 150.0), (6.0, 50.0, FIRING, 6.0), (1.0, 50.0, OK, None)],
)
def test_a_value_metric_fires_on_any_of_its_thresholds(
    avg: float, top: float, state: str, value: float | None
) -> None:
    th = _th('[metric."m"]\navg_above = 5\nmax_above = 100\nmin_count = 3\n')
    part = {"m": _value(3, p95=1.0, avg=avg, top=top)}
    result = _by_key(evaluate(summary(NOW, metrics=part), th.settings, NOW, thresholds=th))[
        "metric:m"
    ]
    assert result.state == state
    if value is not None:
        assert result.value == value
    few = {"m": _value(2, p95=1.0, avg=avg, top=top)}
    below_min = _by_key(evaluate(summary(NOW, metrics=few), th.settings, NOW, thresholds=th))
    assert below_min["metric:m"].state == INSUFFICIENT


@pytest.mark.timeout(60)
def test_a_bad_file_stops_the_worker_at_start(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "rules.toml"
    path.write_text('[queue."emails"]\nmax_length = -5\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
    env["MONITOR_RULES_FILE"] = str(path)
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "monitor_worker", "worker", "--pool=solo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f'{path}:2: queue."emails".max_length' in done.stderr
