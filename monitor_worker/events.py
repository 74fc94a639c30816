"""Event validation and the compact raw-list encoding.

A raw-list entry is one line of bytes, the free-text field last so it may hold any character::

    a|<ts>|<response_time_s>|<status_code>|<endpoint>     an API request
    p|<ts>|<amount>|<reason>                              a payment failure
    o|<ts>|<count>                                        events dropped by a full app buffer

Numbers are written with ``repr`` so they round-trip exactly.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

MAX_NAME_LEN = 200
API = "a"
PAYMENT = "p"
OVERFLOW = "o"


def _name(value: Any, arg: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{arg} must be a non-empty str")
    if len(value) > MAX_NAME_LEN:
        raise ValueError(f"{arg} must be at most {MAX_NAME_LEN} characters (got {len(value)})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{arg} must be valid text (it holds an unpaired surrogate)") from None
    return value


def _number(value: Any, arg: str, *, allow_decimal: bool = False) -> float:
    ok = isinstance(value, (int, float)) or (allow_decimal and isinstance(value, Decimal))
    if isinstance(value, bool) or not ok:
        wanted = "an int, float or Decimal" if allow_decimal else "an int or float"
        raise TypeError(f"{arg} must be {wanted}, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{arg} must be finite (got {value!r})") from None
    if not math.isfinite(number):
        raise ValueError(f"{arg} must be finite (got {value!r})")
    if number < 0:
        raise ValueError(f"{arg} must be >= 0 (got {value!r})")
    return number


def check_timestamp(value: Any) -> float:
    """A unix time in seconds; ``timestamp`` names the argument in errors."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timestamp must be an int or float, not {type(value).__name__}")
    ts = float(value)
    if not math.isfinite(ts) or ts <= 0 or ts >= 1e11:
        raise ValueError(f"timestamp must be a unix time in seconds (got {value!r})")
    return ts


def check_api(endpoint: Any, response_time: Any, status_code: Any) -> tuple[str, float, int]:
    """Validate one API request; errors name the argument. The slow path of tracking."""
    endpoint = _name(endpoint, "endpoint")
    rt = _number(response_time, "response_time")
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise TypeError(f"status_code must be an int, not {type(status_code).__name__}")
    if not 100 <= status_code <= 599:
        raise ValueError(f"status_code must be in 100-599 (got {status_code!r})")
    return endpoint, rt, int(status_code)


def check_payment(reason: Any, amount: Any) -> tuple[str, str]:
    """Validate one payment failure; the amount is kept as exact text."""
    reason = _name(reason, "reason")
    _number(amount, "amount", allow_decimal=True)
    if isinstance(amount, Decimal):
        return reason, format(amount, "f")
    return reason, repr(amount)


def encode_api(ts: float, endpoint: str, response_time_s: float, status_code: int) -> bytes:
    return f"a|{ts!r}|{response_time_s!r}|{status_code}|{endpoint}".encode()


def encode_payment(ts: float, reason: str, amount: str) -> bytes:
    return f"p|{ts!r}|{amount}|{reason}".encode()


def encode_overflow(ts: float, count: int) -> bytes:
    return f"o|{ts!r}|{count}".encode()
