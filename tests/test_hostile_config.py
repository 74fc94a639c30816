"""Every environment variable Settings.from_env reads, given a bad value, fails with a
ConfigError naming that variable (and never with another exception)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from monitor_worker import config
from monitor_worker.config import Settings
from monitor_worker.errors import ConfigError


def _variables_read() -> dict[str, str]:
    """Variable -> reader method (integer, number, flag, text, csv, json_object), from the
    table Settings.from_env reads, so a variable added later is tested too."""
    return {
        config._ENV_OF_FIELD[f.name]: config._READER_OF_TYPE[str(f.type)].__name__
        for f in fields(Settings)
        if f.name in config._ENV_OF_FIELD
    }


VARIABLES = _variables_read()

# A value of the wrong type for each kind of reader ...
BAD_BY_READER = {
    "integer": ["twelve", "1.5", "1e3", "9" * 5000],
    "number": ["fast", "nan", "inf", "-inf", "1e400", "1,5"],
    "flag": ["maybe", "2", "y"],
    "json_object": ["[1]", '"x"', "{", "null", "[" * 100_000],
    "duration": ["fast", "1w", "-1", "0", "0s", "nan", "1e400", "2 days"],
}
# ... and for text variables, a value bad for what they hold.
BAD_TEXT = {
    "MONITOR_REDIS_URL": ["ftp://x", "localhost:6379", "redis://[::1", "redis://:pw@h:port/0"],
    "CELERY_BROKER_URL": ["ftp://x", "amqp://[x"],
    "MONITOR_QUEUES_BROKER_URL": ["ftp://x", "amqp://[x"],
    "SLACK_WEBHOOK_URL": ["ftp://x", "hooks.slack.com/x", "https://[x"],
    "MONITOR_KEY_PREFIX": ["a{b", "a}b", "{s1}"],
    "MONITOR_FLUSH_MODE": ["sometimes", "Thread"],
    "MONITOR_QUEUES": [",", " , , "],
    "MONITOR_ENDPOINT_STYLE": ["path", "Route", "method"],
    "MONITOR_EXCLUDE_PATHS": ["health*", "/metrics,static/*"],
    "MONITOR_WEB_TOKENS": ["alice", "alice=short", "=0123456789abcdef", "a b=0123456789abcdef"],
    "MONITOR_METRICS_TOKEN": ["short", "0123456789 abcdef"],
    "MONITOR_HISTORY_URL": ["ftp://x", "mysql://h/db", "redis://h/0", "postgresql://[x"],
}
# Free text: every value is acceptable.
FREE_TEXT = {
    "MONITOR_TASK_QUEUE",
    "MONITOR_SERVICE_NAME",
    "MONITOR_ENVIRONMENT",
    "MONITOR_ENDPOINTS",
    "MONITOR_WEB_ALLOWED_HOSTS",
    "MONITOR_RULES_FILE",  # a path; the file itself is checked by the worker and the CLI
}
# Values the type accepts but the field cannot hold; -1 is out of range for every number read.
OUT_OF_RANGE = {
    "MONITOR_SHARDS": ["1025"],
    "MONITOR_ERROR_STATUS_MIN": ["99", "600"],
    "MONITOR_WINDOW_SECONDS": ["59", str(10**20)],
    "MONITOR_AGGREGATE_BATCH": [str(2**63)],
    "MONITOR_WEB_CACHE_SECONDS": ["3601"],
    "MONITOR_CACHE_HIT_RATE_MIN": ["100.5"],
    "MONITOR_HISTORY_MINUTES_RETENTION": ["1h", "4000d"],
    "MONITOR_HISTORY_HOURS_RETENTION": ["1h", "4000d"],
}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for name, reader in sorted(VARIABLES.items()):
        values = BAD_BY_READER.get(reader, []) + BAD_TEXT.get(name, [])
        if reader in ("integer", "number", "duration"):
            values = [*values, "-1", *OUT_OF_RANGE.get(name, [])]
        cases += [(name, value) for value in values]
    return cases


def test_every_variable_has_bad_values_or_is_free_text() -> None:
    assert len(VARIABLES) >= 40
    assert set(config._ENV_OF_FIELD.values()) == set(VARIABLES)
    untested = {n for n in VARIABLES if not any(name == n for name, _ in _cases())}
    assert untested == FREE_TEXT


@pytest.mark.parametrize(
    ("name", "value"), [pytest.param(n, v, id=f"{n}={v[:20]!r}") for n, v in _cases()]
)
def test_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}:"), message
    if "URL" in name and "pw" in value:
        assert "pw" not in message


# Blank means "none" for these (an empty exclusion list excludes nothing).
BLANK_MEANS_NONE = {"MONITOR_EXCLUDE_PATHS"}


@pytest.mark.parametrize("name", sorted(VARIABLES.keys() - BLANK_MEANS_NONE))
def test_blank_value_means_the_default(name: str) -> None:
    assert Settings.from_env({name: "  "}) == Settings.from_env({})


@pytest.mark.parametrize("name", sorted(BLANK_MEANS_NONE))
def test_blank_value_means_none(name: str) -> None:
    field = next(f for f, v in config._ENV_OF_FIELD.items() if v == name)
    assert getattr(Settings.from_env({}), field)
    assert getattr(Settings.from_env({name: ""}), field) == ()
    assert getattr(Settings.from_env({name: "  "}), field) == ()
