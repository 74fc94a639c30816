"""Settings: one frozen object, the only reader of ``os.environ``.

Usage::

    settings = Settings.from_env()          # fails naming the variable on a bad value
    settings = Settings(redis_url="redis://127.0.0.1:6379/1", shards=2)
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError
from .keys import bucket_ttl_s

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BUCKET_S = 60  # time-bucket width; the window is a whole number of buckets
MAX_WINDOW_S = 7 * 86400  # also the longest interval or timeout accepted
MAX_COUNT = 10**9  # the largest count-like setting accepted
DAY_S = 86400
MAX_RETENTION_S = 3650 * DAY_S

T = TypeVar("T")
Seconds = float  # a duration read as "30s", "15m", "2h", "1d" or a bare number of seconds

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, max_s: float | None = None) -> float:
    """Seconds in ``"30s"``, ``"15m"``, ``"2h"`` or ``"1d"`` (a bare number is seconds);
    ValueError beyond ``max_s``."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else 0.0
    if not (seconds > 0 and (max_s is None or seconds <= max_s)):
        most = "" if max_s is None else f"; at most {max_s / 86400:g}d"
        shown = text[:60] if isinstance(text, str) else text
        raise ValueError(
            f"duration: expected a number and a unit s, m, h or d (30s, 15m, 2h, 1d{most}), "
            f"got {shown!r}"
        )
    return seconds


def redact_url(url: str | None) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and output)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and not (parts.username and "@" in parts.netloc):
        return url
    host = parts.hostname or ""
    if port is not None:
        host = f"{host}:{port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def redact_webhook(url: str | None) -> str:
    """Show only the scheme, host and the first path element of a webhook URL."""
    if not url:
        return "(not set)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    first = parts.path.strip("/").split("/")[0] if parts.path else ""
    return f"{parts.scheme}://{parts.hostname}/{first}/***"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user directory holding the embedded server's data and URL file."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "monitor-worker"


def embedded_url_file(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / "redis-url"


def read_embedded_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The URL recorded by a running ``monitor-worker run``, if the file is ours and private."""
    path = embedded_url_file(environ)
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return None
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


@dataclass(frozen=True)
class Settings:
    """Every knob of monitor-worker; see README.md for the environment variable of each."""

    redis_url: str = DEFAULT_REDIS_URL
    redis_url_explicit: bool = False
    redis_cluster: bool = False
    broker_url: str = DEFAULT_REDIS_URL
    broker_url_explicit: bool = False
    task_queue: str = "monitoring"
    key_prefix: str = "monitoring:"
    window_s: int = 3600
    error_status_min: int = 500
    aggregate_interval_s: float = 10.0
    aggregate_batch: int = 50_000
    check_interval_s: float = 30.0
    queue_check_interval_s: float = 30.0
    deliver_interval_s: float = 5.0
    buffer_max: int = 100_000
    flush_interval_s: float = 1.0
    flush_batch: int = 2_000
    flush_mode: str = "auto"
    shards: int = 8
    raw_max: int = 1_000_000
    max_endpoints: int = 500
    max_reasons: int = 100
    error_rate_threshold: float = 5.0
    payment_failure_threshold: int = 10
    celery_queue_threshold: int = 100
    api_response_threshold: float = 2.0
    alert_throttle_s: int = 600
    min_requests: int = 20
    endpoints: tuple[str, ...] = ()
    service_name: str = ""
    environment: str = ""
    send_resolved: bool = True
    delivery_max_age_s: float = 3600.0
    alert_group_max: int = 10
    check_delivery_timeout_s: float = 30.0
    slack_webhook_url: str = field(default="", repr=False)
    slack_timeout_s: float = 10.0
    queues: tuple[str, ...] = ("celery",)
    queues_broker_url: str = ""
    queues_broker_transport_options: Mapping[str, Any] = field(default_factory=dict)
    queue_growth_checks: int = 3
    queue_growth_min: int = 20
    pending_threshold: int = 100_000
    exclude_paths: tuple[str, ...] = ("/health*", "/metrics", "/static/*", "/favicon.ico")
    track_unmatched: bool = True
    endpoint_style: str = "route"
    max_queues: int = 200
    web_tokens: tuple[str, ...] = field(default=(), repr=False)
    metrics_token: str = field(default="", repr=False)
    web_allowed_hosts: tuple[str, ...] = ()
    web_cache_s: float = 5.0
    max_tasks: int = 500
    max_metrics: int = 500
    max_aliases: int = 100
    task_failure_rate_threshold: float = 10.0
    min_task_runs: int = 10
    task_wait_threshold: float = 60.0
    db_p95_threshold: float = 0.5
    cache_hit_rate_min: float = 0.0
    min_cache_lookups: int = 100
    rules_file: str = ""
    # field -> "env" (its variable was set) or "class" (a MetricsMonitor subclass attribute)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    archive_interval_s: float = 60.0
    history_url: str = ""
    # 0: the history store's own default (see history_retention)
    history_minutes_retention_s: Seconds = 0.0
    history_hours_retention_s: Seconds = 0.0

    def __post_init__(self) -> None:
        _check(self)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("redis_url", "broker_url", "queues_broker_url", "history_url"):
                value = redact_url(value)
            elif f.name == "slack_webhook_url":
                value = redact_webhook(value)
            elif f.name in _SECRET_FIELDS:
                value = _redact_secret(f.name, value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def window_buckets(self) -> int:
        return math.ceil(self.window_s / BUCKET_S)

    @property
    def history_retention(self) -> tuple[float, float]:
        """(minute rows, hour and day rows) kept, in seconds: the variables, or the store's
        defaults (Redis 24 h and 7 d, PostgreSQL 7 d and 90 d)."""
        minutes, hours = (7 * DAY_S, 90 * DAY_S) if self.history_url else (DAY_S, 7 * DAY_S)
        minutes_s = self.history_minutes_retention_s or float(
            max(minutes, self.history_bins_life_s)
        )
        return minutes_s, self.history_hours_retention_s or float(max(hours, minutes_s))

    @property
    def bucket_life_s(self) -> int:
        """How long a minute bucket lives after its last write (2 x window + 600 s)."""
        return bucket_ttl_s(self.window_s)

    @property
    def history_bins_life_s(self) -> int:
        """How long after its start a minute's history may still change: a bucket takes
        writes for a bucket life after its minute and lives a bucket life after its last
        write, and an archive run may come a little after that."""
        return 2 * self.bucket_life_s + 600

    @property
    def inspected_broker_url(self) -> str:
        return self.queues_broker_url or self.broker_url

    @property
    def web_token_names(self) -> dict[str, str]:
        """``MONITOR_WEB_TOKENS`` as token -> name (the name is who a token stands for)."""
        pairs = (entry.partition("=") for entry in self.web_tokens)
        return {token: name for name, _, token in pairs}

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None
    ) -> Settings:
        """Build settings from the environment; a bad value raises ConfigError naming it.

        ``defaults`` (field name -> value) replace built-in defaults for unset variables.
        """
        env = os.environ if environ is None else environ
        r = _Reader(env)
        redis_url = r.text("MONITOR_REDIS_URL", "")
        explicit = bool(redis_url)
        if not redis_url:
            redis_url = read_embedded_url(env) or DEFAULT_REDIS_URL
        broker = r.text("CELERY_BROKER_URL", "")
        values: dict[str, Any] = dict(
            redis_url=redis_url,
            redis_url_explicit=explicit,
            broker_url=broker or redis_url,
            broker_url_explicit=bool(broker),
        )
        built_in = cls()
        for f in fields(cls):
            variable = _ENV_OF_FIELD.get(f.name)
            if variable is not None and f.name not in values:
                read = _READER_OF_TYPE[str(f.type)]
                values[f.name] = read(r, variable, getattr(built_in, f.name))
        for name, empty in _EMPTY_MEANS_NONE.items():
            raw = env.get(_ENV_OF_FIELD[name])
            if raw is not None and not raw.strip():
                values[name] = empty
        sources = {
            name: "env" for name, variable in _ENV_OF_FIELD.items() if env.get(variable, "").strip()
        }
        for name, value in (defaults or {}).items():
            if not env.get(_ENV_OF_FIELD.get(name, ""), "").strip():
                values[name] = value
                sources[name] = "class"
        values["sources"] = sources
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(_env_name(str(exc))) from None


# field name -> environment variable; the default is the field's own
_ENV_OF_FIELD = {
    "redis_url": "MONITOR_REDIS_URL",
    "redis_cluster": "MONITOR_REDIS_CLUSTER",
    "broker_url": "CELERY_BROKER_URL",
    "task_queue": "MONITOR_TASK_QUEUE",
    "key_prefix": "MONITOR_KEY_PREFIX",
    "window_s": "MONITOR_WINDOW_SECONDS",
    "error_status_min": "MONITOR_ERROR_STATUS_MIN",
    "aggregate_interval_s": "MONITOR_AGGREGATE_INTERVAL",
    "aggregate_batch": "MONITOR_AGGREGATE_BATCH",
    "check_interval_s": "MONITOR_CHECK_INTERVAL",
    "queue_check_interval_s": "MONITOR_QUEUE_CHECK_INTERVAL",
    "deliver_interval_s": "MONITOR_DELIVER_INTERVAL",
    "buffer_max": "MONITOR_BUFFER_MAX",
    "flush_interval_s": "MONITOR_FLUSH_INTERVAL",
    "flush_batch": "MONITOR_FLUSH_BATCH",
    "flush_mode": "MONITOR_FLUSH_MODE",
    "shards": "MONITOR_SHARDS",
    "raw_max": "MONITOR_RAW_MAX",
    "max_endpoints": "MONITOR_MAX_ENDPOINTS",
    "max_reasons": "MONITOR_MAX_REASONS",
    "error_rate_threshold": "MONITOR_ERROR_RATE_THRESHOLD",
    "payment_failure_threshold": "MONITOR_PAYMENT_FAILURE_THRESHOLD",
    "celery_queue_threshold": "MONITOR_CELERY_QUEUE_THRESHOLD",
    "api_response_threshold": "MONITOR_API_RESPONSE_THRESHOLD",
    "alert_throttle_s": "MONITOR_ALERT_THROTTLE_SECONDS",
    "min_requests": "MONITOR_MIN_REQUESTS",
    "endpoints": "MONITOR_ENDPOINTS",
    "service_name": "MONITOR_SERVICE_NAME",
    "environment": "MONITOR_ENVIRONMENT",
    "send_resolved": "MONITOR_SEND_RESOLVED",
    "delivery_max_age_s": "MONITOR_DELIVERY_MAX_AGE",
    "alert_group_max": "MONITOR_ALERT_GROUP_MAX",
    "check_delivery_timeout_s": "MONITOR_CHECK_DELIVERY_TIMEOUT",
    "slack_webhook_url": "SLACK_WEBHOOK_URL",
    "slack_timeout_s": "MONITOR_SLACK_TIMEOUT",
    "queues": "MONITOR_QUEUES",
    "queues_broker_url": "MONITOR_QUEUES_BROKER_URL",
    "queues_broker_transport_options": "MONITOR_QUEUES_BROKER_TRANSPORT_OPTIONS",
    "queue_growth_checks": "MONITOR_QUEUE_GROWTH_CHECKS",
    "queue_growth_min": "MONITOR_QUEUE_GROWTH_MIN",
    "pending_threshold": "MONITOR_PENDING_THRESHOLD",
    "exclude_paths": "MONITOR_EXCLUDE_PATHS",
    "track_unmatched": "MONITOR_TRACK_UNMATCHED",
    "endpoint_style": "MONITOR_ENDPOINT_STYLE",
    "max_queues": "MONITOR_MAX_QUEUES",
    "web_tokens": "MONITOR_WEB_TOKENS",
    "metrics_token": "MONITOR_METRICS_TOKEN",
    "web_allowed_hosts": "MONITOR_WEB_ALLOWED_HOSTS",
    "web_cache_s": "MONITOR_WEB_CACHE_SECONDS",
    "max_tasks": "MONITOR_MAX_TASKS",
    "max_metrics": "MONITOR_MAX_METRICS",
    "max_aliases": "MONITOR_MAX_ALIASES",
    "task_failure_rate_threshold": "MONITOR_TASK_FAILURE_RATE_THRESHOLD",
    "min_task_runs": "MONITOR_MIN_TASK_RUNS",
    "task_wait_threshold": "MONITOR_TASK_WAIT_THRESHOLD",
    "db_p95_threshold": "MONITOR_DB_P95_THRESHOLD",
    "cache_hit_rate_min": "MONITOR_CACHE_HIT_RATE_MIN",
    "min_cache_lookups": "MONITOR_MIN_CACHE_LOOKUPS",
    "rules_file": "MONITOR_RULES_FILE",
    "archive_interval_s": "MONITOR_ARCHIVE_INTERVAL",
    "history_url": "MONITOR_HISTORY_URL",
    "history_minutes_retention_s": "MONITOR_HISTORY_MINUTES_RETENTION",
    "history_hours_retention_s": "MONITOR_HISTORY_HOURS_RETENTION",
}
# variables whose empty value means "none" rather than the default
_EMPTY_MEANS_NONE = {"exclude_paths": ()}

# fields holding secrets: never shown, not even in an error about their own value
_SECRET_FIELDS = ("web_tokens", "metrics_token")
MIN_TOKEN_CHARS = 16
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _redact_secret(name: str, value: Any) -> str:
    if name == "web_tokens":
        return ",".join(f"{entry.partition('=')[0]}=***" for entry in value)
    return "***" if value else ""


def _env_name(message: str) -> str:
    name, _, rest = message.partition(":")
    return f"{_ENV_OF_FIELD.get(name, name)}:{rest}"


_REDIS_SCHEMES = ("redis", "rediss", "unix")
_BROKER_SCHEMES = ("redis", "rediss", "unix", "sentinel", "amqp", "amqps", "pyamqp", "memory")


def _check(s: Settings) -> None:
    def bad(name: str, why: str) -> NoReturn:
        raise ConfigError(f"{name}: {why} (got {_shown(name, getattr(s, name))})")

    def scheme(name: str) -> str:
        try:
            parts = urlsplit(str(getattr(s, name)))
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            bad(name, f"is not a valid URL ({exc})")
        return parts.scheme.split("+")[0]

    if scheme("redis_url") not in _REDIS_SCHEMES:
        bad("redis_url", "must be a redis://, rediss:// or unix:// URL")
    for name in ("broker_url", "queues_broker_url"):
        if getattr(s, name) and scheme(name) not in _BROKER_SCHEMES:
            bad(name, "must be a redis://, rediss://, sentinel:// or amqp:// URL")
    if not s.key_prefix or any(c in s.key_prefix for c in "{}"):
        bad("key_prefix", "must be non-empty and contain no '{' or '}'")
    if not s.task_queue:
        bad("task_queue", "must be non-empty")
    positive_ints = (
        "window_s",
        "aggregate_batch",
        "buffer_max",
        "flush_batch",
        "shards",
        "raw_max",
        "max_endpoints",
        "max_reasons",
        "alert_group_max",
        "queue_growth_checks",
        "pending_threshold",
        "max_queues",
        "max_tasks",
        "max_metrics",
        "max_aliases",
    )
    for name in positive_ints:
        if not 1 <= getattr(s, name) <= MAX_COUNT:
            bad(name, f"must be a whole number >= 1 and at most {MAX_COUNT}")
    if not BUCKET_S <= s.window_s <= MAX_WINDOW_S:
        bad("window_s", f"must be between {BUCKET_S} and {MAX_WINDOW_S} (7 days)")
    positive_floats = (
        "aggregate_interval_s",
        "check_interval_s",
        "queue_check_interval_s",
        "deliver_interval_s",
        "flush_interval_s",
        "delivery_max_age_s",
        "check_delivery_timeout_s",
        "slack_timeout_s",
        "archive_interval_s",
    )
    for name in positive_floats:
        value = getattr(s, name)
        if not (math.isfinite(value) and 0 < value <= MAX_WINDOW_S):
            bad(name, f"must be a number > 0 and at most {MAX_WINDOW_S}")
    non_negative = (
        "error_rate_threshold",
        "payment_failure_threshold",
        "celery_queue_threshold",
        "api_response_threshold",
        "alert_throttle_s",
        "min_requests",
        "queue_growth_min",
        "task_failure_rate_threshold",
        "min_task_runs",
        "task_wait_threshold",
        "db_p95_threshold",
        "cache_hit_rate_min",
        "min_cache_lookups",
    )
    for name in non_negative:
        value = getattr(s, name)
        if not (math.isfinite(value) and 0 <= value <= MAX_COUNT):
            bad(name, f"must be a number >= 0 and at most {MAX_COUNT}")
    if s.cache_hit_rate_min > 100:
        bad("cache_hit_rate_min", "must be a percentage 0-100")
    if not 100 <= s.error_status_min <= 599:
        bad("error_status_min", "must be an HTTP status code 100-599")
    if s.endpoint_style not in ("route", "method_route"):
        bad("endpoint_style", "must be one of route, method_route")
    for glob in s.exclude_paths:
        if not glob.startswith(("/", "*")):
            bad("exclude_paths", f"each glob must start with '/' or '*' ({glob!r} does not)")
    if s.flush_mode not in ("auto", "thread", "inline"):
        bad("flush_mode", "must be one of auto, thread, inline")
    if s.shards > 1024:
        bad("shards", "must be at most 1024")
    if s.slack_webhook_url and scheme("slack_webhook_url") not in ("http", "https"):
        bad("slack_webhook_url", "must be an http(s) URL")
    if not s.queues:
        bad("queues", "must name at least one queue")
    if not (math.isfinite(s.web_cache_s) and 0 <= s.web_cache_s <= 3600):
        bad("web_cache_s", "must be a number >= 0 and at most 3600")
    _check_tokens(s, bad)
    if s.history_url and scheme("history_url") not in ("postgresql", "postgres"):
        bad("history_url", "must be a postgresql:// URL (unset: history in the metrics store)")
    for name in ("history_minutes_retention_s", "history_hours_retention_s"):
        value = getattr(s, name)
        if not (math.isfinite(value) and 0 <= value <= MAX_RETENTION_S):
            bad(name, "must be a duration such as 24h, 7d or 90d, at most 3650d")
    minutes_s, hours_s = s.history_retention
    if minutes_s < s.history_bins_life_s:
        bad(
            "history_minutes_retention_s",
            f"must be at least {s.history_bins_life_s} s (4 x MONITOR_WINDOW_SECONDS + 1800 s: "
            "as long as a late flush can still change a minute)",
        )
    if hours_s < minutes_s:
        bad("history_hours_retention_s", "must be at least MONITOR_HISTORY_MINUTES_RETENTION")
    if s.redis_cluster:
        if s.broker_url == s.redis_url:
            bad(
                "broker_url",
                "must be set to a single Redis, Sentinel or RabbitMQ broker when "
                "MONITOR_REDIS_CLUSTER=1 (kombu has no Redis Cluster transport)",
            )
        parts = urlsplit(s.redis_url)
        if parts.scheme == "unix" or parts.path.strip("/") not in ("", "0"):
            bad("redis_url", "must be a redis:// or rediss:// URL of database 0 on a cluster")


def _check_tokens(s: Settings, bad: Callable[[str, str], NoReturn]) -> None:
    names: set[str] = set()
    tokens: set[str] = set()
    for entry in s.web_tokens:
        name, eq, token = entry.partition("=")
        if not eq or not _TOKEN_NAME.match(name):
            bad(
                "web_tokens",
                "must be name=token pairs, comma-separated (name: letters, digits, _.@-)",
            )
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            bad(
                "web_tokens", f"each token must be at least {MIN_TOKEN_CHARS} characters, no spaces"
            )
        if name in names or token in tokens:
            bad("web_tokens", "names and tokens must be unique")
        names.add(name)
        tokens.add(token)
    token = s.metrics_token
    if token and (len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token)):
        bad("metrics_token", f"must be at least {MIN_TOKEN_CHARS} characters, no spaces")


def _shown(name: str, value: Any) -> str:
    if name in _SECRET_FIELDS:
        return repr(_redact_secret(name, value))
    if name == "slack_webhook_url":
        return redact_webhook(value)
    if name.endswith("url"):
        return repr(redact_url(value))
    return repr(value)


class _Reader:
    """Parses environment values, raising ConfigError naming the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _get(self, name: str, default: T, parse: Callable[[str], T], what: str) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, TypeError, RecursionError):
            shown = "***" if "URL" in name or "TOKEN" in name else repr(raw[:60])
            raise ConfigError(f"{name}: must be {what} (got {shown})") from None

    def text(self, name: str, default: str) -> str:
        return self._get(name, default, str, "text")

    def integer(self, name: str, default: int) -> int:
        return self._get(name, default, int, "a whole number")

    def number(self, name: str, default: float) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value

        return self._get(name, default, parse, "a number")

    def flag(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)

        return self._get(name, default, parse, "one of 1/0, true/false, yes/no, on/off")

    def duration(self, name: str, default: float) -> float:
        return self._get(name, default, parse_duration, "a duration such as 90s, 30m, 24h or 7d")

    def csv(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in raw.split(",") if part.strip())

        return self._get(name, default, parse, "a comma-separated list")

    def json_object(self, name: str, default: Mapping[str, Any]) -> Mapping[str, Any]:
        def parse(raw: str) -> Mapping[str, Any]:
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError(raw)
            return value

        return self._get(name, default, parse, "a JSON object")


# a Settings field's annotation -> the reader of its variable
_READER_OF_TYPE: dict[str, Callable[[_Reader, str, Any], Any]] = {
    "bool": _Reader.flag,
    "int": _Reader.integer,
    "float": _Reader.number,
    "str": _Reader.text,
    "tuple[str, ...]": _Reader.csv,
    "Mapping[str, Any]": _Reader.json_object,
    "Seconds": _Reader.duration,
}
