"""Rules are pure: a summary and ``now`` in, one verdict per alert key out."""

from __future__ import annotations

from typing import Any

import pytest

from monitor_worker.config import Settings
from monitor_worker.rules import (
    FIRING,
    INSUFFICIENT,
    NO_TRAFFIC,
    OK,
    RuleResult,
    evaluate,
    format_value,
    rules_can_fire,
)
from tests import helpers
from tests.helpers import endpoint_stats as endpoint

NOW = 1_700_000_000.0
SETTINGS = Settings()


def queue(length: int = 0, growing: bool = False, growth: float | None = None) -> dict:
    return {
        "length": length,
        "exists": True,
        "checked_at": NOW - 10,
        "growth_per_minute": growth,
        "drain_eta_seconds": None,
        "growing": growing,
    }


def summary(**parts: Any) -> dict[str, Any]:
    return helpers.summary(NOW, **parts)


def payments(failures: int) -> dict[str, Any]:
    return {
        "failures_last_hour": failures,
        "by_reason": {"card_declined": failures},
        "amount_total": 10.0 * failures,
        "amount_by_reason": {"card_declined": 10.0 * failures},
    }


def broker(reachable: bool) -> dict[str, Any]:
    return {"reachable": reachable, "error": None, "checked_at": NOW, "broker": "redis://h:6379/0"}


def by_key(results: list[RuleResult]) -> dict[str, RuleResult]:
    keys = [r.key for r in results]
    assert len(keys) == len(set(keys)), "one result per alert key"
    return {r.key: r for r in results}


# (alert key, summary at the threshold: quiet, summary just above it: firing)
CASES = [
    (
        "error_rate:/api/x/",
        summary(api={"/api/x/": endpoint(100, errors=5)}),  # exactly 5.0 %
        summary(api={"/api/x/": endpoint(100, errors=6)}),
    ),
    (
        "slow_response:/api/x/",
        summary(api={"/api/x/": endpoint(100, fast=95)}),  # P95 exactly at the threshold
        summary(api={"/api/x/": endpoint(100, fast=94)}),
    ),
    ("payment_failures", summary(payments=payments(10)), summary(payments=payments(11))),
    (
        "celery_queue:celery",
        summary(celery={"celery": queue(100)}),
        summary(celery={"celery": queue(101)}),
    ),
    (
        "celery_queue_growing:celery",
        summary(celery={"celery": queue(5, growing=False, growth=50.0)}),
        summary(celery={"celery": queue(5, growing=True, growth=50.0)}),
    ),
    (
        "broker_unreachable",
        summary(queue_broker=broker(True)),
        summary(queue_broker=broker(False)),
    ),
    ("aggregation_lag", summary(pending_events=100_000), summary(pending_events=100_001)),
]


@pytest.mark.parametrize(("key", "at", "above"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_above_threshold_only(key: str, at: dict, above: dict) -> None:
    quiet = by_key(evaluate(at, SETTINGS, NOW))[key]
    assert quiet.state == OK
    assert quiet.notice is not None and quiet.notice.status == "resolved"
    loud = by_key(evaluate(above, SETTINGS, NOW))[key]
    assert loud.state == FIRING
    assert loud.notice is not None and loud.notice.status == "firing"
    assert loud.notice.key == key
    others = [r.key for r in evaluate(above, SETTINGS, NOW) if r.state == FIRING]
    assert others == [key]


@pytest.mark.parametrize(
    ("fast", "total", "state"),
    [
        (95, 100, OK),
        (94, 100, FIRING),
        (19, 20, OK),
        (18, 20, FIRING),
        (57, 60, OK),  # 0.95 * 60 is not exact in binary floating point
        (950, 1000, OK),
        (949, 1000, FIRING),
        (0, 20, FIRING),
    ],
)
def test_slow_response_is_decided_on_exact_counts(fast: int, total: int, state: str) -> None:
    # the reported P95 says nothing here: the counts decide
    stats = endpoint(total, fast=fast, p95=2.0)
    result = by_key(evaluate(summary(api={"/a/": stats}), SETTINGS, NOW))["slow_response:/a/"]
    assert result.state == state


@pytest.mark.parametrize(
    ("min_requests", "total", "state"),
    [(20, 19, INSUFFICIENT), (20, 20, FIRING), (0, 1, FIRING), (100, 99, INSUFFICIENT)],
)
def test_endpoint_rules_need_min_requests(min_requests: int, total: int, state: str) -> None:
    settings = Settings(min_requests=min_requests)
    api = {"/a/": endpoint(total, errors=total, fast=0)}
    results = by_key(evaluate(summary(api=api), settings, NOW))
    for key in ("error_rate:/a/", "slow_response:/a/"):
        assert results[key].state == state
        assert (results[key].notice is None) == (state == INSUFFICIENT)


def test_firing_endpoint_without_traffic_resolves_with_note() -> None:
    firing = {"error_rate:/gone/", "slow_response:/gone/", "payment_failures"}
    results = by_key(evaluate(summary(api={"/a/": endpoint()}), SETTINGS, NOW, firing=firing))
    for key in ("error_rate:/gone/", "slow_response:/gone/"):
        assert results[key].state == NO_TRAFFIC
        notice = results[key].notice
        assert notice is not None and notice.status == "resolved" and notice.note == "no traffic"
    assert results["payment_failures"].state == OK
    assert "error_rate:/a/" in results
    # an endpoint with some traffic, even below min_requests, is not "no traffic"
    low = by_key(evaluate(summary(api={"/gone/": endpoint(3)}), SETTINGS, NOW, firing=firing))
    assert low["error_rate:/gone/"].state == INSUFFICIENT


def test_endpoints_setting_limits_the_endpoint_rules() -> None:
    settings = Settings(endpoints=("/a/",))
    api = {"/a/": endpoint(100, errors=50), "/b/": endpoint(100, errors=50)}
    results = by_key(evaluate(summary(api=api), settings, NOW, firing={"error_rate:/b/"}))
    assert results["error_rate:/a/"].state == FIRING
    assert "slow_response:/b/" not in results
    assert results["error_rate:/b/"].state == OK  # firing before, now unwatched: resolves
    every = by_key(evaluate(summary(api=api), SETTINGS, NOW))
    assert every["error_rate:/b/"].state == FIRING


def test_thresholds_come_from_settings() -> None:
    settings = Settings(error_rate_threshold=50.0, api_response_threshold=0.5, pending_threshold=9)
    api = {"/a/": endpoint(100, errors=40, fast=96)}
    results = by_key(evaluate(summary(api=api, pending_events=10), settings, NOW))
    assert results["error_rate:/a/"].state == OK
    assert results["error_rate:/a/"].threshold == 50.0
    assert results["slow_response:/a/"].threshold == 0.5
    assert results["aggregation_lag"].state == FIRING


def details(result: RuleResult) -> dict[str, str]:
    assert result.notice is not None
    return dict(result.notice.details)


def test_endpoint_notice_says_what_to_act_on() -> None:
    api = {"/api/pay/": endpoint(200, errors=30)}
    result = by_key(evaluate(summary(api=api), SETTINGS, NOW))["error_rate:/api/pay/"]
    assert result.value == 15.0 and result.threshold == 5.0
    assert result.notice is not None and "15.00 %" in result.notice.title
    shown = details(result)
    assert shown["Window"] == "1h"
    assert shown["Requests"] == "200" and shown["Errors"] == "30"
    assert shown["Threshold"] == "> 5 %"


def test_payment_notice_lists_top_reasons_and_amount() -> None:
    pay = {
        "failures_last_hour": 40,
        "by_reason": {f"r{i}": i for i in range(1, 9)} | {"card_declined": 12},
        "amount_total": 12345.5,
        "amount_by_reason": {"card_declined": 9000},
    }
    result = by_key(evaluate(summary(payments=pay), SETTINGS, NOW))["payment_failures"]
    shown = details(result)
    reasons = shown["Top reasons"].splitlines()
    assert reasons[0] == "card_declined: 12 (9,000)"
    assert len(reasons) == 5 and reasons[1].startswith("r8: 8")
    assert shown["Amount at stake"] == "12,345.50"
    assert shown["Failures"] == "40" and shown["Threshold"] == "> 10"


def test_queue_notice_carries_length_and_trend() -> None:
    info = queue(500, growing=True, growth=30.0) | {"drain_eta_seconds": None}
    results = by_key(evaluate(summary(celery={"jobs": info}), SETTINGS, NOW))
    shown = details(results["celery_queue:jobs"])
    assert shown["Length"] == "500" and shown["Growth"] == "+30.0 messages/min"
    assert shown["Drain ETA"] == "not draining" and shown["Checked"] == "10 s ago"
    draining = queue(500, growth=-60.0) | {"drain_eta_seconds": 500.0}
    shown = details(
        by_key(evaluate(summary(celery={"jobs": draining}), SETTINGS, NOW))["celery_queue:jobs"]
    )
    assert shown["Drain ETA"] == "8 min 20 s"


def test_unknown_broker_state_decides_nothing() -> None:
    assert "broker_unreachable" not in by_key(evaluate(summary(), SETTINGS, NOW))


def test_missing_sections_are_quiet() -> None:
    results = evaluate({"timestamp": NOW}, SETTINGS, NOW)
    assert all(r.state == OK for r in results)
    assert {r.key for r in results} == {"payment_failures", "aggregation_lag"}


@pytest.mark.parametrize(("key", "at", "above"), CASES, ids=[c[0] for c in CASES])
def test_every_key_the_rules_produce_is_known(key: str, at: dict, above: dict) -> None:
    for result in evaluate(above, SETTINGS, NOW):
        assert rules_can_fire(result.key), result.key


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("error_rate:/api/x/", 12.290884260839878, "12.29 %"),
        ("slow_response:/api/x/", 2.85791, "2.858 s"),
        ("payment_failures", 12.0, "12"),
        ("celery_queue:celery", 101.0, "101"),
        ("celery_queue_growing:celery", 50.0, "+50.0/min"),
        ("task_failure_rate:app.send", 7.5, "7.50 %"),
        ("task_queue_wait:mail", 31.25, "31.250 s"),
        ("db_slow:default", 0.51234, "0.512 s"),
        ("cache_hit_rate:default", 42.0, "42.00 %"),
        ("metric:checkout.basket", 3.25, "3.25"),
        ("broker_unreachable", 1.0, "1"),
        ("aggregation_lag", 100001.0, "100001"),
        ("error_rate:/api/x/", None, "-"),
    ],
)
def test_format_value_uses_the_rules_unit(key: str, value: float | None, shown: str) -> None:
    assert format_value(key, value) == shown


@pytest.mark.parametrize(
    ("pattern", "known"),
    [
        ("error_rate:/api/content/", True),
        ("error_rate:/api/*", True),
        ("error_rate:*", True),
        ("error*", True),
        ("*", True),
        ("payment_failures", True),
        ("payment*", True),
        ("celery_queue:celery", True),
        ("celery_queue_growing:*", True),
        ("task_failure_rate:app.send", True),
        ("db_slow:default", True),
        ("cache_hit_rate:*", True),
        ("metric:checkout.basket", True),
        ("aggregation_lag", True),
        ("broker_unreachable", True),
        ("eror_rate:/api/*", False),
        ("error_rate", False),
        ("error_rate:", False),
        ("payment_failures:x", False),
        ("payment_failures:*", False),
        ("/api/content/*", False),
        ("x", False),
    ],
)
def test_rules_can_fire_knows_the_key_shapes(pattern: str, known: bool) -> None:
    assert rules_can_fire(pattern) is known
