"""Argument validation of the track calls: errors name the argument."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from monitor_worker.events import check_api, check_payment, check_timestamp


@pytest.mark.parametrize(
    ("args", "exc", "name"),
    [
        ((None, 0.1, 200), TypeError, "endpoint"),
        (("", 0.1, 200), ValueError, "endpoint"),
        (("x" * 201, 0.1, 200), ValueError, "endpoint"),
        (("/\ud800/", 0.1, 200), ValueError, "endpoint"),
        (("/x/", "0.1", 200), TypeError, "response_time"),
        (("/x/", True, 200), TypeError, "response_time"),
        (("/x/", -0.1, 200), ValueError, "response_time"),
        (("/x/", float("nan"), 200), ValueError, "response_time"),
        (("/x/", float("inf"), 200), ValueError, "response_time"),
        (("/x/", 0.1, 200.0), TypeError, "status_code"),
        (("/x/", 0.1, True), TypeError, "status_code"),
        (("/x/", 0.1, 99), ValueError, "status_code"),
        (("/x/", 0.1, 600), ValueError, "status_code"),
    ],
)
def test_check_api_rejects(args: tuple[Any, ...], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        check_api(*args)


def test_check_api_accepts_int_subclasses_and_unicode() -> None:
    from http import HTTPStatus

    assert check_api("/é/", 1, HTTPStatus.OK) == ("/é/", 1.0, 200)


@pytest.mark.parametrize(
    ("args", "exc", "name"),
    [
        ((None, 1), TypeError, "reason"),
        (("", 1), ValueError, "reason"),
        (("Card", "10"), TypeError, "amount"),
        (("Card", False), TypeError, "amount"),
        (("Card", -1), ValueError, "amount"),
        (("Card", Decimal("NaN")), ValueError, "amount"),
        (("Card", 10**400), ValueError, "amount"),
    ],
)
def test_check_payment_rejects(args: tuple[Any, ...], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        check_payment(*args)


@pytest.mark.parametrize(
    ("amount", "value"), [(10000, 10000.0), (0.5, 0.5), (Decimal("19.99"), 19.99)]
)
def test_amount_becomes_a_float(amount: Any, value: float) -> None:
    assert check_payment("Card", amount) == ("Card", value)


@pytest.mark.parametrize("bad", [None, "1", True, float("nan"), -1, 0, 1e12])
def test_check_timestamp_rejects(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="timestamp"):
        check_timestamp(bad)
