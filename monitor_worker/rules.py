"""Alert rules: the window's metrics summary -> one result per alert key (pure).

Usage::

    for result in evaluate(summary, settings, now=time.time()):
        if result.state == FIRING:
            print(result.key, result.value, result.threshold)

A result that is not firing still carries a "resolved" notice, used only when that key was
firing. Endpoint rules need ``settings.min_requests`` requests in the window; below that the
state is INSUFFICIENT and nothing changes. Keys given in ``firing`` whose endpoint had no
request at all in the window come back as NO_TRAFFIC (resolved with the note "no traffic").
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .config import Settings
from .slack import Notice
from .thresholds import Thresholds

FIRING = "firing"
OK = "ok"
INSUFFICIENT = "insufficient"
NO_TRAFFIC = "no_traffic"
ENDPOINT_RULES = ("error_rate", "slow_response")
TOP_REASONS = 5
_RULE_NAMES = {
    "error_rate": "Error rate",
    "slow_response": "P95 response time",
    "task_failure_rate": "Failure rate of task",
    "task_queue_wait": "P95 queue wait of queue",
    "db_slow": "P95 query time of database",
    "cache_hit_rate": "Hit rate of cache",
    "metric": "Metric",
}
# rule of an alert key -> (summary section of its subject, rules-file section)
_SUBJECTS = {
    "error_rate": ("api", "endpoint"),
    "slow_response": ("api", "endpoint"),
    "task_failure_rate": ("tasks", "task"),
    "task_queue_wait": ("task_queues", "queue"),
    "db_slow": ("db", "db"),
    "cache_hit_rate": ("cache", "cache"),
    "metric": ("metrics", "metric"),
}

# rule of an alert key (the part before ":") -> the unit of its value: "%", "s", "count",
# "/min" (messages per minute) or "" (as measured, a custom metric)
VALUE_UNITS = {
    "error_rate": "%",
    "slow_response": "s",
    "payment_failures": "count",
    "celery_queue": "count",
    "celery_queue_growing": "/min",
    "task_failure_rate": "%",
    "task_queue_wait": "s",
    "db_slow": "s",
    "cache_hit_rate": "%",
    "metric": "",
    "broker_unreachable": "count",
    "aggregation_lag": "count",
}
# the alert keys with no subject (no ":"); every other rule's key is "<rule>:<subject>"
BARE_KEYS = frozenset({"payment_failures", "broker_unreachable", "aggregation_lag"})


def format_value(key: str, value: float | None) -> str:
    """The value of alert ``key`` in its rule's unit: ``12.29 %``, ``2.858 s``, ``12``."""
    if value is None:
        return "-"
    unit = VALUE_UNITS.get(key.partition(":")[0])
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "count":
        return str(round(value))
    if unit == "/min":
        return f"{value:+.1f}/min"
    return f"{value:g}"


def rules_can_fire(pattern: str) -> bool:
    """Whether some rule can produce an alert key matching ``pattern`` (an exact key or a
    prefix ending in ``*``): ``error_rate:/api/*`` can, ``eror_rate:/api/*`` cannot."""
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return any(
            rule.startswith(prefix)
            if rule in BARE_KEYS
            else f"{rule}:".startswith(prefix) or prefix.startswith(f"{rule}:")
            for rule in VALUE_UNITS
        )
    rule, colon, subject = pattern.partition(":")
    if rule in BARE_KEYS:
        return not colon
    return rule in VALUE_UNITS and bool(subject)


@dataclass(frozen=True)
class RuleResult:
    """The verdict of one rule on one subject; ``notice`` is what Slack would be told."""

    key: str
    state: str
    value: float | None
    threshold: float | None
    notice: Notice | None


def evaluate(
    summary: Mapping[str, Any],
    settings: Settings,
    now: float,
    *,
    firing: Collection[str] = (),
    thresholds: Thresholds | None = None,
) -> list[RuleResult]:
    """Evaluate every rule on ``summary``; ``firing`` are the alert keys firing before.

    ``thresholds`` default to ``Thresholds.of(settings)`` (the rules file over the settings).
    """
    th = Thresholds.of(settings) if thresholds is None else thresholds
    window = _window(summary.get("window_seconds") or settings.window_s)
    api = summary.get("api") or {}
    watched = set(settings.endpoints) if settings.endpoints else None
    results: list[RuleResult] = []
    for endpoint in sorted(api):
        if (watched is None or endpoint in watched) and th.enabled("endpoint", endpoint):
            results.extend(_endpoint(endpoint, api[endpoint], th, window))
    for key in sorted(firing):
        rule, _, subject = key.partition(":")
        if rule not in _SUBJECTS:
            continue
        section, file_section = _SUBJECTS[rule]
        endpoint_rule = rule in ENDPOINT_RULES
        name = f"{_RULE_NAMES[rule]} {'on ' if endpoint_rule else ''}{subject}"
        if subject not in (summary.get(section) or {}):
            what = "no request" if endpoint_rule else "no data"
            title = f"{name}: {what} in the last {window}"
            results.append(_resolved(key, NO_TRAFFIC, title, "no traffic"))
        elif rule in ENDPOINT_RULES and watched is not None and subject not in watched:
            title = f"{name}: endpoint no longer watched"
            results.append(_resolved(key, OK, title, "no longer watched"))
        elif not th.enabled(file_section, subject):
            results.append(_resolved(key, OK, f"{name}: rule disabled", "disabled"))
    results.extend(_payments(summary.get("payments") or {}, settings, window))
    for queue in sorted(summary.get("celery") or {}):
        if th.enabled("queue", queue):
            results.extend(_queue(queue, summary["celery"][queue], th, now))
    results.extend(_kinds(summary, th, window))
    results.extend(_broker(summary.get("queue_broker"), now))
    pending = _int(summary.get("pending_events"))
    lag_limit = settings.pending_threshold
    results.append(
        _verdict(
            "aggregation_lag",
            pending > lag_limit,
            pending,
            lag_limit,
            f"{pending} raw events waiting for aggregation (threshold {lag_limit})",
            f"Aggregation caught up: {pending} raw events waiting",
            (("Waiting events", str(pending)), ("Threshold", f"> {lag_limit}")),
        )
    )
    return results


def _endpoint(
    endpoint: str, stats: Mapping[str, Any], th: Thresholds, window: str
) -> list[RuleResult]:
    total = _int(stats.get("total_requests"))
    errors = _int(stats.get("error_count"))
    rate = _float(stats.get("error_rate"))
    p95 = _float(stats.get("p95_response_time"))
    keys = [f"{rule}:{endpoint}" for rule in ENDPOINT_RULES]
    if total < th.value("endpoint", endpoint, "min_requests"):
        return [RuleResult(key, INSUFFICIENT, None, None, None) for key in keys]
    common = (
        ("Window", window),
        ("Requests", str(total)),
        ("Errors", str(errors)),
        ("Error rate", f"{rate:.2f} %"),
        ("P95 response time", f"{p95:.3f} s"),
        ("Average response time", f"{_float(stats.get('avg_response_time')):.3f} s"),
    )
    limit = th.value("endpoint", endpoint, "error_rate_percent")
    error_rule = _verdict(
        keys[0],
        rate > limit,
        rate,
        limit,
        f"Error rate {rate:.2f} % > {limit:g} % on {endpoint}",
        f"Error rate back to {rate:.2f} % on {endpoint}",
        (("Threshold", f"> {limit:g} %"), *common),
    )
    limit_s = th.value("endpoint", endpoint, "p95_seconds")
    # at_or_below_threshold is counted against MONITOR_API_RESPONSE_THRESHOLD
    fast = stats.get("at_or_below_threshold")
    if limit_s != th.settings.api_response_threshold:
        fast = None
    # P95 > limit exactly: fewer than 95 % of the responses took at most the limit.
    slow = 100 * _int(fast) < 95 * total if fast is not None else p95 > limit_s
    slow_rule = _verdict(
        keys[1],
        slow,
        p95,
        limit_s,
        f"P95 response time {p95:.3f} s > {limit_s:g} s on {endpoint}",
        f"P95 response time back to {p95:.3f} s on {endpoint}",
        (
            ("Threshold", f"P95 > {limit_s:g} s"),
            ("Responses within threshold", f"{_int(fast)} of {total}"),
            *common,
        ),
    )
    return [error_rule, slow_rule]


def _payments(payments: Mapping[str, Any], settings: Settings, window: str) -> list[RuleResult]:
    failures = _int(payments.get("failures_last_hour"))
    limit = settings.payment_failure_threshold
    by_reason: Mapping[str, Any] = payments.get("by_reason") or {}
    amounts: Mapping[str, Any] = payments.get("amount_by_reason") or {}
    top = sorted(by_reason.items(), key=lambda kv: (-_int(kv[1]), kv[0]))[:TOP_REASONS]
    reasons = "\n".join(
        f"{reason}: {_int(count)} ({_amount(amounts.get(reason))})" for reason, count in top
    )
    details: tuple[tuple[str, str], ...] = (
        ("Failures", str(failures)),
        ("Threshold", f"> {limit}"),
        ("Window", window),
        ("Amount at stake", _amount(payments.get("amount_total"))),
        ("Top reasons", reasons or "none recorded"),
    )
    return [
        _verdict(
            "payment_failures",
            failures > limit,
            failures,
            limit,
            f"{failures} payment failures in the last {window} (threshold {limit})",
            f"Payment failures back to {failures} in the last {window}",
            details,
        )
    ]


def _queue(queue: str, info: Mapping[str, Any], th: Thresholds, now: float) -> list[RuleResult]:
    length = _int(info.get("length"))
    growth = info.get("growth_per_minute")
    eta = info.get("drain_eta_seconds")
    checked = info.get("checked_at")
    limit = th.value("queue", queue, "max_length")
    details: tuple[tuple[str, str], ...] = (
        ("Length", str(length)),
        ("Threshold", f"> {limit}"),
        ("Growth", "unknown" if growth is None else f"{_float(growth):+.1f} messages/min"),
        ("Drain ETA", _eta(eta, growth)),
        (
            "Checked",
            "unknown" if checked is None else f"{max(0.0, now - _float(checked)):.0f} s ago",
        ),
    )
    if info.get("exists") is False:
        details = (*details, ("Note", "the queue does not exist on the broker"))
    return [
        _verdict(
            f"celery_queue:{queue}",
            length > limit,
            length,
            limit,
            f"Celery queue {queue} holds {length} messages (threshold {limit})",
            f"Celery queue {queue} back to {length} messages",
            details,
        ),
        _verdict(
            f"celery_queue_growing:{queue}",
            info.get("growing") is True,
            None if growth is None else _float(growth),
            None,
            f"Celery queue {queue} keeps growing ({_rate(growth)}, now {length} messages)",
            f"Celery queue {queue} stopped growing ({length} messages)",
            details,
        ),
    ]


def _kinds(summary: Mapping[str, Any], th: Thresholds, window: str) -> list[RuleResult]:
    """The rules of tasks, task queues, databases, caches and custom metrics."""
    results: list[RuleResult] = []
    for task, t in sorted((summary.get("tasks") or {}).items()):
        if th.enabled("task", task):
            results.append(_task(task, t, th, window))
    for queue, q in sorted((summary.get("task_queues") or {}).items()):
        if th.enabled("queue", queue):
            results.append(_task_queue(queue, q, th, window))
    for alias, d in sorted((summary.get("db") or {}).items()):
        if th.enabled("db", alias):
            results.append(_db(alias, d, th, window))
    for alias, c in sorted((summary.get("cache") or {}).items()):
        if th.enabled("cache", alias):
            results.append(_cache(alias, c, th, window))
    for name, m in sorted((summary.get("metrics") or {}).items()):
        if th.enabled("metric", name) and th.entry("metric", name):
            results.append(_metric(name, m, th, window))
    return results


def _task(task: str, t: Mapping[str, Any], th: Thresholds, window: str) -> RuleResult:
    key = f"task_failure_rate:{task}"
    runs = _int(t.get("runs"))
    if runs < th.value("task", task, "min_runs"):
        return RuleResult(key, INSUFFICIENT, None, None, None)
    rate, limit = _float(t.get("failure_rate")), th.value("task", task, "failure_rate_percent")
    details = (
        ("Threshold", f"> {limit:g} %"),
        ("Window", window),
        ("Runs", str(runs)),
        ("Failures", str(_int(t.get("failures")))),
        ("Retries", str(_int(t.get("retries")))),
        ("P95 runtime", _seconds(t.get("p95_runtime"))),
        ("Queue", str(t.get("queue") or "unknown")),
    )
    return _verdict(
        key,
        rate > limit,
        rate,
        limit,
        f"Task {task} fails {rate:.2f} % of its runs (threshold {limit:g} %)",
        f"Task {task} failure rate back to {rate:.2f} %",
        details,
    )


def _task_queue(queue: str, q: Mapping[str, Any], th: Thresholds, window: str) -> RuleResult:
    key = f"task_queue_wait:{queue}"
    p95 = q.get("p95_queue_wait")
    if p95 is None:
        return RuleResult(key, INSUFFICIENT, None, None, None)
    wait, limit = _float(p95), th.value("queue", queue, "p95_wait_seconds")
    details = (
        ("Threshold", f"P95 > {limit:g} s"),
        ("Window", window),
        ("Tasks", str(_int(q.get("tasks")))),
        ("Average wait", _seconds(q.get("avg_queue_wait"))),
    )
    return _verdict(
        key,
        wait > limit,
        wait,
        limit,
        f"Tasks wait {wait:.1f} s (P95) in queue {queue} before they start (threshold {limit:g} s)",
        f"Queue wait of {queue} back to {wait:.1f} s (P95)",
        details,
    )


def _db(alias: str, d: Mapping[str, Any], th: Thresholds, window: str) -> RuleResult:
    p95, limit = _float(d.get("p95_query_time")), th.value("db", alias, "p95_seconds")
    details = (
        ("Threshold", f"P95 > {limit:g} s"),
        ("Window", window),
        ("Queries", str(_int(d.get("queries")))),
        ("Errors", str(_int(d.get("errors")))),
        ("Average query time", _seconds(d.get("avg_query_time"))),
    )
    return _verdict(
        f"db_slow:{alias}",
        p95 > limit,
        p95,
        limit,
        f"Database {alias}: P95 query time {p95:.3f} s > {limit:g} s",
        f"Database {alias}: P95 query time back to {p95:.3f} s",
        details,
    )


def _cache(alias: str, c: Mapping[str, Any], th: Thresholds, window: str) -> RuleResult:
    key = f"cache_hit_rate:{alias}"
    lookups, minimum = _int(c.get("lookups")), th.value("cache", alias, "min_hit_rate_percent")
    if minimum <= 0 or lookups < th.value("cache", alias, "min_lookups"):
        return RuleResult(key, INSUFFICIENT, None, None, None)
    rate = _float(c.get("hit_rate"))
    details = (
        ("Threshold", f"< {minimum:g} %"),
        ("Window", window),
        ("Lookups", str(lookups)),
        ("Hits", str(_int(c.get("hits")))),
    )
    return _verdict(
        key,
        rate < minimum,
        rate,
        minimum,
        f"Cache {alias}: hit rate {rate:.2f} % < {minimum:g} %",
        f"Cache {alias}: hit rate back to {rate:.2f} %",
        details,
    )


# rules-file field of a metric threshold -> (summary field, shown as, fires when above)
_METRIC_LIMITS = {
    "p95_above": ("p95", "P95", True),
    "avg_above": ("avg", "average", True),
    "max_above": ("max", "maximum", True),
    "ok_rate_below_percent": ("ok_rate", "success rate", False),
}


def _metric(name: str, m: Mapping[str, Any], th: Thresholds, window: str) -> RuleResult:
    key = f"metric:{name}"
    count = _int(m.get("count"))
    # (shown as, value, limit, fires when above) of each threshold set for this metric
    checks = [
        (shown, _float(m.get(stat)), limit, above)
        for field, (stat, shown, above) in _METRIC_LIMITS.items()
        if (limit := th.value("metric", name, field)) is not None and stat in m
    ]
    if not checks or count < th.value("metric", name, "min_count"):
        return RuleResult(key, INSUFFICIENT, None, None, None)
    broken = [c for c in checks if (c[1] > c[2] if c[3] else c[1] < c[2])]
    shown, value, limit, above = broken[0] if broken else checks[0]
    details = (
        ("Thresholds", ", ".join(f"{s} {'>' if a else '<'} {lim:g}" for s, _, lim, a in checks)),
        ("Window", window),
        ("Count", str(count)),
        *((s, f"{v:g}") for s, v, _, _ in checks),
    )
    return _verdict(
        key,
        bool(broken),
        value,
        limit,
        f"Metric {name}: {shown} {value:g} {'>' if above else '<'} {limit:g}",
        f"Metric {name} back within its thresholds",
        details,
    )


def _seconds(value: Any) -> str:
    return "unknown" if value is None else f"{_float(value):.3f} s"


def _broker(status: Mapping[str, Any] | None, now: float) -> list[RuleResult]:
    if status is None:
        return []
    down = status.get("reachable") is False
    checked = status.get("checked_at")
    details: tuple[tuple[str, str], ...] = (
        ("Broker", str(status.get("broker") or "unknown")),
        ("Error", str(status.get("error") or "none")),
        (
            "Checked",
            "unknown" if checked is None else f"{max(0.0, now - _float(checked)):.0f} s ago",
        ),
    )
    return [
        _verdict(
            "broker_unreachable",
            down,
            1.0 if down else 0.0,
            None,
            "The Celery broker cannot be reached for queue inspection",
            "The Celery broker is reachable again",
            details,
        )
    ]


def _verdict(
    key: str,
    firing: bool,
    value: float | None,
    threshold: float | None,
    firing_title: str,
    ok_title: str,
    details: tuple[tuple[str, str], ...],
) -> RuleResult:
    if firing:
        return RuleResult(
            key, FIRING, value, threshold, Notice(key, "firing", firing_title, details)
        )
    return RuleResult(key, OK, value, threshold, Notice(key, "resolved", ok_title, details))


def _resolved(key: str, state: str, title: str, note: str) -> RuleResult:
    return RuleResult(key, state, None, None, Notice(key, "resolved", title, (), note))


def _window(seconds: Any) -> str:
    s = _int(seconds)
    if s and s % 3600 == 0:
        return f"{s // 3600}h"
    if s and s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


def _eta(eta: Any, growth: Any) -> str:
    if eta is not None:
        return _duration(_float(eta))
    if growth is not None and _float(growth) >= 0:
        return "not draining"
    return "unknown"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _rate(growth: Any) -> str:
    return "growth unknown" if growth is None else f"{_float(growth):+.1f}/min"


def _amount(value: Any) -> str:
    number = _float(value)
    return f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"


def _int(value: Any) -> int:
    number = _float(value)
    return int(number)


def _float(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0
