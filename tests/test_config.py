"""Settings from the environment: defaults, and a bad value names its variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor_worker.config import (
    _ENV_OF_FIELD,
    DEFAULT_REDIS_URL,
    Settings,
    redact_url,
    redact_webhook,
)
from monitor_worker.errors import ConfigError


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = Settings.from_env({})
    assert s.redis_url == DEFAULT_REDIS_URL
    assert s.broker_url == s.redis_url
    assert (s.error_rate_threshold, s.payment_failure_threshold) == (5.0, 10)
    assert (s.celery_queue_threshold, s.api_response_threshold, s.alert_throttle_s) == (
        100,
        2.0,
        600,
    )
    assert s.window_s == 3600 and s.task_queue == "monitoring" and s.queues == ("celery",)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MONITOR_WINDOW_SECONDS", "abc"),
        ("MONITOR_WINDOW_SECONDS", "10"),
        ("MONITOR_ERROR_RATE_THRESHOLD", "-1"),
        ("MONITOR_ERROR_RATE_THRESHOLD", "nan"),
        ("MONITOR_API_RESPONSE_THRESHOLD", "fast"),
        ("MONITOR_AGGREGATE_INTERVAL", "0"),
        ("MONITOR_CHECK_INTERVAL", "-5"),
        ("MONITOR_SHARDS", "0"),
        ("MONITOR_BUFFER_MAX", "1.5"),
        ("MONITOR_ERROR_STATUS_MIN", "700"),
        ("MONITOR_KEY_PREFIX", "a{b}"),
        ("MONITOR_REDIS_URL", "http://x"),
        ("CELERY_BROKER_URL", "ftp://x"),
        ("MONITOR_SEND_RESOLVED", "maybe"),
        ("MONITOR_QUEUES_BROKER_TRANSPORT_OPTIONS", "[1, 2]"),
        ("MONITOR_FLUSH_MODE", "sometimes"),
        ("SLACK_WEBHOOK_URL", "hooks.slack.com/services/T/B/secret"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_passwords_never_shown() -> None:
    env = {
        "MONITOR_REDIS_URL": "redis://:hunter2@127.0.0.1:6379/0",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/topsecret",
    }
    s = Settings.from_env(env)
    assert "hunter2" not in repr(s) and "topsecret" not in repr(s)
    assert redact_url(s.redis_url) == "redis://:***@127.0.0.1:6379/0"
    assert "topsecret" not in redact_webhook(s.slack_webhook_url)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MONITOR_REDIS_URL": "http://:hunter2@x/"})
    assert "hunter2" not in str(info.value)


def test_lists_and_json() -> None:
    s = Settings.from_env(
        {
            "MONITOR_ENDPOINTS": "/api/review/today/, /api/content/,",
            "MONITOR_QUEUES": "celery,emails",
            "MONITOR_QUEUES_BROKER_TRANSPORT_OPTIONS": '{"global_keyprefix": "x:"}',
        }
    )
    assert s.endpoints == ("/api/review/today/", "/api/content/")
    assert s.queues == ("celery", "emails")
    assert s.queues_broker_transport_options == {"global_keyprefix": "x:"}


@pytest.mark.parametrize(
    ("env", "name"),
    [
        (
            {"MONITOR_REDIS_CLUSTER": "1", "MONITOR_REDIS_URL": "redis://n1:7000/0"},
            "CELERY_BROKER_URL",
        ),
        (
            {
                "MONITOR_REDIS_CLUSTER": "1",
                "MONITOR_REDIS_URL": "redis://n1:7000/3",
                "CELERY_BROKER_URL": "amqp://guest:guest@mq//",
            },
            "MONITOR_REDIS_URL",
        ),
    ],
)
def test_cluster_needs_its_own_broker_and_database_0(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


# values a generic rule can't invent: each must pass the variable's own check
_SAMPLES: dict[str, str | tuple[str, object]] = {
    "MONITOR_REDIS_URL": "redis://127.0.0.1:6390/3",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "MONITOR_QUEUES_BROKER_URL": "redis://127.0.0.1:6390/4",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
    "MONITOR_FLUSH_MODE": "inline",
    "MONITOR_ENDPOINT_STYLE": "method_route",
    "MONITOR_WEB_TOKENS": (
        "alice=0123456789abcdef, bob=fedcba9876543210",
        ("alice=0123456789abcdef", "bob=fedcba9876543210"),
    ),
    "MONITOR_METRICS_TOKEN": "scrape-0123456789abcdef",
}
# MONITOR_REDIS_CLUSTER needs a broker of its own: test_cluster_needs_its_own_broker_...
_ALONE = sorted((n, v) for n, v in _ENV_OF_FIELD.items() if v != "MONITOR_REDIS_CLUSTER")


def _documented_variables() -> set[str]:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n")[1].split("\n## ")[0]
    rows = (line.split("|")[1] for line in section.splitlines() if line.startswith("| `"))
    return {name for cell in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}


def test_readme_documents_every_variable_read() -> None:
    assert _documented_variables() - {"XDG_DATA_HOME"} == set(_ENV_OF_FIELD.values())


@pytest.mark.parametrize(("name", "variable"), _ALONE)
def test_each_variable_sets_its_field(name: str, variable: str) -> None:
    built_in = getattr(Settings(), name)
    sample = _SAMPLES.get(variable)
    if isinstance(sample, tuple):
        raw, want = sample
    elif sample is not None:
        raw, want = sample, sample
    elif isinstance(built_in, bool):
        raw, want = ("0", False) if built_in else ("1", True)
    elif isinstance(built_in, int | float):
        raw, want = str(built_in + 60), built_in + 60
    elif isinstance(built_in, tuple):
        raw, want = " /a, /b ,", ("/a", "/b")
    elif isinstance(built_in, str):
        raw, want = "other-", "other-"
    else:
        raw, want = '{"visibility_timeout": 7}', {"visibility_timeout": 7}
    assert want != built_in
    assert getattr(Settings.from_env({variable: raw}), name) == want
