"""Per-target thresholds: the rules file (``MONITOR_RULES_FILE``, TOML) over the settings.

Usage::

    th = Thresholds.of(settings)                # reads the file once per process
    th.value("task", "billing.charge", "failure_rate_percent")
    th.enabled("endpoint", "/api/health/")

Precedence for any threshold: the file's entry for that target, then the environment
variable, then the ``MetricsMonitor`` class attribute, then the default. A bad file raises
ConfigError naming the file, the line and the field.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .errors import ConfigError

PERCENT, SECONDS, NUMBER, COUNT, FLAG = "percent", "seconds", "number", "count", "flag"
_WHAT = {
    PERCENT: "a number from 0 to 100",
    SECONDS: "a number of seconds >= 0",
    NUMBER: "a number >= 0",
    COUNT: "a whole number >= 0",
    FLAG: "true or false",
}

# section -> field -> (type, the Settings field holding its default, or None)
FIELDS: dict[str, dict[str, tuple[str, str | None]]] = {
    "endpoint": {
        "error_rate_percent": (PERCENT, "error_rate_threshold"),
        "p95_seconds": (SECONDS, "api_response_threshold"),
        "min_requests": (COUNT, "min_requests"),
    },
    "task": {
        "failure_rate_percent": (PERCENT, "task_failure_rate_threshold"),
        "min_runs": (COUNT, "min_task_runs"),
    },
    "queue": {
        "max_length": (COUNT, "celery_queue_threshold"),
        "p95_wait_seconds": (SECONDS, "task_wait_threshold"),
    },
    "db": {"p95_seconds": (SECONDS, "db_p95_threshold")},
    "cache": {
        "min_hit_rate_percent": (PERCENT, "cache_hit_rate_min"),
        "min_lookups": (COUNT, "min_cache_lookups"),
    },
    "metric": {
        "p95_above": (NUMBER, None),
        "avg_above": (NUMBER, None),
        "max_above": (NUMBER, None),
        "ok_rate_below_percent": (PERCENT, None),
        "min_count": (COUNT, None),
    },
}
for _fields in FIELDS.values():
    _fields["enabled"] = (FLAG, None)
VALUE_FIELDS = ("p95_above", "avg_above", "max_above")
RATIO_FIELDS = ("ok_rate_below_percent",)
METRIC_MIN_COUNT = 1  # a metric threshold without min_count applies from the first value
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


@dataclass(frozen=True)
class RulesFile:
    """The entries of one rules file: (section, target) -> {field: value}, with its path."""

    path: str = ""
    entries: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)


def load(path: str) -> RulesFile:
    """Read and check a rules file; ConfigError names the file, the line and the field."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"MONITOR_RULES_FILE: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the rules file must be UTF-8 text") from None
    return parse(text, path)


def parse(text: str, path: str = "<rules>") -> RulesFile:
    """Check the text of a rules file (see ``load``)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        line = found.group(1) if found else "1"
        raise ConfigError(f"{path}:{line}: not valid TOML: {exc}") from None

    def fail(why: str, section: str, target: str | None = None, name: str | None = None) -> None:
        where = section if target is None else f'{section}."{target}"'
        if name is not None:
            where += f".{name}"
        line = _line_of(text, section, target, name)
        raise ConfigError(f"{path}:{line}: {where}: {why}")

    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for section, targets in doc.items():
        known = FIELDS.get(section)
        if known is None:
            fail(f"unknown section (known: {', '.join(FIELDS)})", section)
            continue
        if not isinstance(targets, dict):
            fail(f'must be tables such as [{section}."<name>"]', section)
            continue
        for target, values in targets.items():
            if not isinstance(values, dict):
                fail(f'must be a table such as [{section}."<name>"]', section, target)
                continue
            for name, value in values.items():
                spec = known.get(name)
                if spec is None:
                    fail(f"unknown field (known: {', '.join(known)})", section, target, name)
                    continue
                why = _bad_value(spec[0], value)
                if why:
                    fail(why, section, target, name)
            if section == "metric":
                kinds = [f for f in (*VALUE_FIELDS, *RATIO_FIELDS) if f in values]
                if any(f in VALUE_FIELDS for f in kinds) and any(f in RATIO_FIELDS for f in kinds):
                    odd = next(f for f in kinds if f in RATIO_FIELDS)
                    fail(
                        f"does not fit a value metric ({kinds[0]} is set): a metric is either "
                        "a value (p95_above, avg_above, max_above) or a ratio "
                        "(ok_rate_below_percent)",
                        section,
                        target,
                        odd,
                    )
            entries[section, target] = dict(values)
    return RulesFile(path, entries)


def _bad_value(kind: str, value: Any) -> str:
    """Why ``value`` is not a ``kind`` ('' when it is)."""
    shown = (
        f"(got {value!r})"
        if not isinstance(value, (dict, list))
        else f"(got a {type(value).__name__})"
    )
    if kind == FLAG:
        return "" if isinstance(value, bool) else f"must be {_WHAT[kind]} {shown}"
    if kind == COUNT:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return "" if ok else f"must be {_WHAT[kind]} {shown}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        return f"must be {_WHAT[kind]} {shown}"
    if kind == PERCENT and value > 100:
        return f"must be {_WHAT[kind]} {shown}"
    return ""


def _header_path(line: str) -> list[str] | None:
    """The keys of a table header line (``[a."b.c"]`` -> ["a", "b.c"]), else None."""
    stripped = line.strip()
    if not stripped.startswith("["):
        return None
    try:
        table: Any = tomllib.loads(stripped)
    except tomllib.TOMLDecodeError:
        return None
    path = []
    while isinstance(table, dict) and len(table) == 1:
        key = next(iter(table))
        path.append(key)
        table = table[key]
    return path


def _line_of(text: str, section: str, target: str | None, name: str | None) -> int:
    """The line of a section, a target's table or one of its fields (tomllib gives no line
    for a value it parsed): the field's own line where it can be told, else its table's."""
    wanted = [section] if target is None else [section, target]
    header = fallback = 0
    inside = False
    for n, line in enumerate(text.splitlines(), 1):
        path = _header_path(line)
        if path is not None:
            inside = path == wanted
            if not header and path[: len(wanted)] == wanted:
                header = n
            continue
        if "=" not in line:
            continue
        if inside and name is not None:
            try:
                keys = tomllib.loads(line)
            except tomllib.TOMLDecodeError:
                continue
            if name in keys:
                return n
        if not fallback and target is not None and target in line:
            fallback = n  # a dotted key or an inline table
    return header or fallback or 1


@dataclass(frozen=True)
class Thresholds:
    """The effective threshold of every rule for every target: the file over the settings."""

    settings: Settings
    file: RulesFile = RulesFile()

    @classmethod
    def of(cls, settings: Settings) -> Thresholds:
        """The thresholds of ``settings``: its rules file is read once per process."""
        path = settings.rules_file
        if not path:
            return cls(settings)
        loaded = _LOADED.get(path)
        if loaded is None:
            loaded = _LOADED[path] = load(path)
        return cls(settings, loaded)

    def entry(self, section: str, target: str) -> Mapping[str, Any]:
        return self.file.entries.get((section, target), {})

    def value(self, section: str, target: str, name: str) -> Any:
        """The threshold ``name`` of ``target``: the file's, else the settings' (None: none)."""
        found = self.entry(section, target).get(name)
        if found is not None:
            return found
        default = FIELDS[section][name][1]
        if default is not None:
            return getattr(self.settings, default)
        return METRIC_MIN_COUNT if name == "min_count" else None

    def enabled(self, section: str, target: str) -> bool:
        return bool(self.entry(section, target).get("enabled", True))

    def rows(self) -> list[dict[str, Any]]:
        """Every effective threshold with where it came from (``monitor-worker rules``): one
        row per default (target ``*``), then one per field of each target of the file."""
        out: list[dict[str, Any]] = []
        for section, known in FIELDS.items():
            for name, (_, default) in known.items():
                if default is not None:
                    out.append(
                        _row(
                            section,
                            "*",
                            name,
                            getattr(self.settings, default),
                            self.settings.sources.get(default, "default"),
                        )
                    )
        for (section, target), values in sorted(self.file.entries.items()):
            for name, (_, default) in FIELDS[section].items():
                if name in values:
                    out.append(_row(section, target, name, values[name], "file"))
                elif default is not None:
                    source = self.settings.sources.get(default, "default")
                    out.append(
                        _row(section, target, name, self.value(section, target, name), source)
                    )
        return out


def _row(section: str, target: str, name: str, value: Any, source: str) -> dict[str, Any]:
    return {"section": section, "target": target, "setting": name, "value": value, "source": source}


_LOADED: dict[str, RulesFile] = {}
