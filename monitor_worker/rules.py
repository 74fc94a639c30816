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

FIRING = "firing"
OK = "ok"
INSUFFICIENT = "insufficient"
NO_TRAFFIC = "no_traffic"
ENDPOINT_RULES = ("error_rate", "slow_response")
TOP_REASONS = 5
_RULE_NAMES = {"error_rate": "Error rate", "slow_response": "P95 response time"}


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
) -> list[RuleResult]:
    """Evaluate every rule on ``summary``; ``firing`` are the alert keys firing before."""
    window = _window(summary.get("window_seconds") or settings.window_s)
    api = summary.get("api") or {}
    watched = set(settings.endpoints) if settings.endpoints else None
    results: list[RuleResult] = []
    for endpoint in sorted(api):
        if watched is None or endpoint in watched:
            results.extend(_endpoint(endpoint, api[endpoint], settings, window))
    for key in sorted(firing):
        rule, _, endpoint = key.partition(":")
        if rule not in ENDPOINT_RULES:
            continue
        if endpoint not in api:
            title = f"{_RULE_NAMES[rule]} on {endpoint}: no request in the last {window}"
            results.append(_resolved(key, NO_TRAFFIC, title, "no traffic"))
        elif watched is not None and endpoint not in watched:
            title = f"{_RULE_NAMES[rule]} on {endpoint}: endpoint no longer watched"
            results.append(_resolved(key, OK, title, "no longer watched"))
    results.extend(_payments(summary.get("payments") or {}, settings, window))
    for queue in sorted(summary.get("celery") or {}):
        results.extend(_queue(queue, summary["celery"][queue], settings, now))
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
    endpoint: str, stats: Mapping[str, Any], settings: Settings, window: str
) -> list[RuleResult]:
    total = _int(stats.get("total_requests"))
    errors = _int(stats.get("error_count"))
    rate = _float(stats.get("error_rate"))
    p95 = _float(stats.get("p95_response_time"))
    keys = [f"{rule}:{endpoint}" for rule in ENDPOINT_RULES]
    if total < settings.min_requests:
        return [RuleResult(key, INSUFFICIENT, None, None, None) for key in keys]
    common = (
        ("Window", window),
        ("Requests", str(total)),
        ("Errors", str(errors)),
        ("Error rate", f"{rate:.2f} %"),
        ("P95 response time", f"{p95:.3f} s"),
        ("Average response time", f"{_float(stats.get('avg_response_time')):.3f} s"),
    )
    limit = settings.error_rate_threshold
    error_rule = _verdict(
        keys[0],
        rate > limit,
        rate,
        limit,
        f"Error rate {rate:.2f} % > {limit:g} % on {endpoint}",
        f"Error rate back to {rate:.2f} % on {endpoint}",
        (("Threshold", f"> {limit:g} %"), *common),
    )
    limit_s = settings.api_response_threshold
    fast = stats.get("at_or_below_threshold")
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


def _queue(queue: str, info: Mapping[str, Any], settings: Settings, now: float) -> list[RuleResult]:
    length = _int(info.get("length"))
    growth = info.get("growth_per_minute")
    eta = info.get("drain_eta_seconds")
    checked = info.get("checked_at")
    limit = settings.celery_queue_threshold
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
