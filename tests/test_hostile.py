"""Hostile arguments to the track calls: each call records an event or raises ValueError or
TypeError naming the argument, and nothing it records is corrupt in Redis.

Companions: test_hostile_fold.py (the raw-list decoder), test_hostile_injection.py (key and
message injection, cardinality caps), test_hostile_config.py (environment variables).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum, IntEnum
from http import HTTPStatus
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from monitor_worker.config import Settings
from monitor_worker.events import check_api, check_payment, check_timestamp, encode_payment
from monitor_worker.fold import fold
from monitor_worker.keys import Keys
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.windows import bucket_of, window_start

API_ARGS = ("endpoint", "response_time", "status_code", "timestamp")
PAY_ARGS = ("reason", "amount", "timestamp")
GOOD = {"endpoint": "/ok/", "response_time": 0.1, "status_code": 200, "reason": "Card", "amount": 1}


class FloatSub(float):
    pass


class IntSub(int):
    pass


class StrSub(str):
    pass


class ReprFloat(float):
    """A float whose repr is not a number (as numpy 2's ``np.float64(1.5)``)."""

    def __repr__(self) -> str:
        return f"ReprFloat({float(self)!r})"


class Cents(IntEnum):
    TEN = 10


class Reason(str, Enum):  # noqa: UP042 - the mixin whose format() is not its value
    DECLINED = "card_declined"


class LongStr(str):
    """A str whose ``__str__`` differs from its value (and is longer than the name limit)."""

    def __str__(self) -> str:
        return "y" * 300


@dataclass(frozen=True)
class Rel:
    """A timestamp relative to the moment of the call."""

    offset_s: float


HOSTILE_TEXT = [
    ":", "|", "{", "}", "{s1}", "\n", "\r\n", "\x00", "<!channel>", "<@U123>", "&", "%",
    "\ud800", "\udfff", "é", "😀", " ", "\t",
]  # fmt: skip

texts = st.lists(
    st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from(HOSTILE_TEXT)),
    max_size=12,
).map("".join)
names = st.one_of(
    texts,
    st.text(min_size=195, max_size=205),
    st.just(""),
    st.none(),
    st.binary(max_size=8),
    st.integers(),
    st.lists(st.text(max_size=3), max_size=2),
    texts.map(StrSub),
    texts.filter(bool).map(LongStr),
    st.just(Reason.DECLINED),
)
HUGE_INTS = [10**308, 2**1024, 10**400, 10**5000, -(10**400), 2**63, -1]
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(HUGE_INTS),
    st.floats(),
    st.sampled_from([float("nan"), float("inf"), -0.0, 1e308, 5e-324]),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("sNaN"), Decimal("-sNaN"), Decimal("1e999999"), Decimal("-0")]),
    st.floats(allow_nan=False).map(FloatSub),
    st.integers(min_value=0, max_value=10**6).map(IntSub),
    st.sampled_from([Cents.TEN, HTTPStatus.OK, True, False]),
    st.none(),
    st.binary(max_size=4),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
)
statuses = st.one_of(
    st.integers(min_value=90, max_value=610), st.sampled_from(list(HTTPStatus)), numbers
)
timestamps = st.one_of(
    st.none(),
    st.floats(min_value=-1200.0, max_value=1e6).map(Rel),  # inside the window or ahead
    st.sampled_from([1.0, 5e10, 1e11, 0, -1.0, 10**400, 10**5000]),
    numbers,
)
api_calls = st.tuples(st.just("api"), names, numbers, statuses, timestamps)
pay_calls = st.tuples(st.just("pay"), names, numbers, timestamps)


def _error_names(exc: BaseException, args: tuple[str, ...]) -> list[str]:
    return [a for a in args if a in str(exc)]


def _rejected_alone(arg: str, value: Any) -> bool:
    """True when ``value`` for ``arg`` is refused with every other argument valid."""
    try:
        if arg == "timestamp":
            check_timestamp(value)
        elif arg in ("reason", "amount"):
            check_payment(**{**_pick(GOOD, ("reason", "amount")), arg: value})
        else:
            good = _pick(GOOD, ("endpoint", "response_time", "status_code"))
            check_api(**{**good, arg: value})
    except (TypeError, ValueError):
        return True
    return False


def _pick(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d[k] for k in keys}


@pytest.fixture
def sub_settings(settings: Settings) -> Iterator[Any]:
    """Settings factory: a fresh key prefix (under the test's) for every hypothesis example."""

    def make(**changes: Any) -> Settings:
        prefix = f"{settings.key_prefix}{uuid.uuid4().hex[:8]}:"
        return settings.with_overrides(key_prefix=prefix, flush_mode="inline", **changes)

    yield make


def _raw_entries(client: redis.Redis, settings: Settings) -> list[bytes]:
    entries: list[bytes] = []
    for sk in Keys(settings.key_prefix, settings.shards).all_shards():
        entries += cast(list[bytes], client.lrange(sk.raw, 0, -1))
    return entries


def _malformed(entries: list[bytes], now: float) -> int:
    delta = fold(entries, now=now, error_status_min=500, threshold_s=2.0, oldest_bucket=0)
    return sum(n for (_, name), n in delta.counters.items() if name == "malformed")


def _run_calls(
    monitor: MetricsMonitor, calls: list[tuple[Any, ...]]
) -> list[tuple[str, float | None]]:
    """Make the calls and check every refusal; return (kind, timestamp) of accepted calls."""
    accepted: list[tuple[str, float | None]] = []
    for call in calls:
        kind, *values = call
        ts = values[-1]
        if isinstance(ts, Rel):
            ts = time.time() + ts.offset_s
        arg_names = API_ARGS if kind == "api" else PAY_ARGS
        try:
            if kind == "api":
                monitor.track_api_request(values[0], values[1], values[2], timestamp=ts)
            else:
                monitor.track_payment_failure(values[0], values[1], timestamp=ts)
        except (TypeError, ValueError) as exc:
            named = _error_names(exc, arg_names)
            assert named, f"{exc!r} names no argument of {call!r}"
            by_name = dict(zip(arg_names, [*values[:-1], ts], strict=True))
            assert any(_rejected_alone(a, by_name[a]) for a in named), (
                f"{exc!r} blames {named} but those values are valid alone"
            )
            continue
        accepted.append((kind, None if ts is None else float(ts)))
    return accepted


@hsettings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(st.one_of(api_calls, pay_calls), min_size=1, max_size=6))
@example(calls=[("api", "/x/", 10**400, 200, None)])  # int beyond float range, fast path
@example(calls=[("pay", "Card", HTTPStatus.OK, None)])  # IntEnum amount
@example(calls=[("pay", "Card", Decimal("sNaN"), None)])  # signalling NaN
@example(calls=[("api", "/x/", 0.1, 200, 10**400)])  # timestamp beyond float range
@example(calls=[("api", LongStr("/x/"), 0.1, 200, None)])  # str subclass
@example(calls=[("api", "/x/", 1e308, 200, None), ("api", "/x/", 1e308, 200, None)])
def test_track_calls_record_or_name_the_argument(
    rclient: redis.Redis, sub_settings: Any, calls: list[tuple[Any, ...]]
) -> None:
    settings = sub_settings()
    monitor = MetricsMonitor(settings=settings)
    try:
        accepted = _run_calls(monitor, calls)
        assert monitor.flush(timeout=5)
        now = time.time()
        entries = _raw_entries(rclient, settings)
        assert len(entries) == len(accepted)
        assert _malformed(entries, now) == 0, entries
        start = window_start(now, settings.window_s)
        counted = [k for k, ts in accepted if ts is None or bucket_of(ts) >= start]
        monitor.aggregate(now=now)
        summary = monitor.get_metrics_summary(now=now)
        assert summary["dropped_events"]["malformed"] == 0
        assert sum(s["total_requests"] for s in summary["api"].values()) == counted.count("api")
        assert summary["payments"]["failures_last_hour"] == counted.count("pay")
    finally:
        _close(monitor)


def _close(monitor: MetricsMonitor) -> None:
    # Cleanup after a failed example must not replace its error with a second one.
    with contextlib.suppress(ValueError, TypeError, OverflowError):
        monitor.close()


# -- one test per hostile input found to break the contract --------------------------------


@pytest.mark.parametrize(
    ("check", "args", "arg"),
    [
        pytest.param(check_payment, ("Card", Decimal("sNaN")), "amount", id="amount-sNaN"),
        pytest.param(check_payment, ("Card", Decimal("-sNaN")), "amount", id="amount--sNaN"),
        pytest.param(check_payment, ("Card", 10**5000), "amount", id="amount-1e5000"),
        pytest.param(check_api, ("/x/", 10**5000, 200), "response_time", id="rt-1e5000"),
        pytest.param(check_api, ("/x/", -(10**5000), 200), "response_time", id="rt--1e5000"),
        pytest.param(check_api, ("/x/", 0.1, 10**5000), "status_code", id="status-1e5000"),
        pytest.param(check_timestamp, (10**400,), "timestamp", id="ts-1e400"),
        pytest.param(check_timestamp, (-(10**400),), "timestamp", id="ts--1e400"),
        pytest.param(check_timestamp, (10**5000,), "timestamp", id="ts-1e5000"),
        pytest.param(check_api, ("x" * 10**6, 0.1, 200), "endpoint", id="endpoint-1MB"),
        pytest.param(check_api, ("/x/", 0.1, Cents.TEN), "status_code", id="status-IntEnum"),
        pytest.param(check_payment, (b"Card", 1), "reason", id="reason-bytes"),
    ],
)
def test_check_errors_name_the_argument(check: Any, args: tuple[Any, ...], arg: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        check(*args)
    assert arg in str(info.value)


@pytest.mark.parametrize("amount", [HTTPStatus.OK, Cents.TEN, ReprFloat(1.5), IntSub(7)])
def test_amount_text_of_number_subclasses_reads_back(amount: Any) -> None:
    _, text = check_payment("Card", amount)
    entry = encode_payment(1_700_000_000.0, "Card", text)
    delta = fold(
        [entry], now=1_700_000_000.0, error_status_min=500, threshold_s=2.0, oldest_bucket=0
    )
    assert not delta.counters, f"amount {amount!r} encoded as {text!r}"
    assert [p.amount for p in delta.pay.values()] == [float(amount)]


@pytest.mark.parametrize(
    "amount", [Decimal("1e-100000"), Decimal("1." + "1" * 100_000), Decimal("-1e-100000")]
)
def test_amount_text_stays_small(amount: Decimal) -> None:
    """A 12-character Decimal must not become a 100 kB raw entry (1e-999999999: 1 GB)."""
    try:
        reason, value = check_payment("Card", amount)
    except ValueError as exc:
        assert "amount" in str(exc)
        return
    assert len(encode_payment(1_700_000_000.0, reason, value)) <= 400


@pytest.mark.parametrize("rt", [2**1024, 10**400, 10**5000], ids=["2**1024", "1e400", "1e5000"])
def test_fast_path_refuses_ints_beyond_float_range(sub_settings: Any, rt: int) -> None:
    """The hot path must not accept what check_api refuses (it skips check_api for ints)."""
    monitor = MetricsMonitor(settings=sub_settings())
    try:
        with pytest.raises(ValueError, match="response_time"):
            monitor.track_api_request("/huge/", rt, 200)
    finally:
        _close(monitor)


def test_huge_int_response_time_never_breaks_flush(sub_settings: Any) -> None:
    """A buffered 10**5000 must not make flush raise or lose the events buffered with it."""
    monitor = MetricsMonitor(settings=sub_settings())
    try:
        monitor.track_api_request("/before/", 0.1, 200)
        with contextlib.suppress(ValueError):
            monitor.track_api_request("/huge/", 10**5000, 200)
        monitor.track_api_request("/after/", 0.1, 200)
        assert monitor.flush(timeout=5)
        api = monitor.get_metrics_summary()["api"]
        assert api["/before/"]["total_requests"] == 1
        assert api["/after/"]["total_requests"] == 1
    finally:
        _close(monitor)


@pytest.mark.parametrize(
    ("name", "stored"), [(Reason.DECLINED, "card_declined"), (LongStr("/s/"), "/s/")]
)
def test_str_subclass_names_are_stored_as_validated(
    sub_settings: Any, name: str, stored: str
) -> None:
    monitor = MetricsMonitor(settings=sub_settings())
    try:
        monitor.track_api_request(name, 0.1, 200)
        monitor.track_payment_failure(name, 5)
        summary = monitor.get_metrics_summary()
        assert summary["dropped_events"]["malformed"] == 0
        assert list(summary["api"]) == [stored]
        assert summary["payments"]["by_reason"] == {stored: 1}
    finally:
        _close(monitor)


@pytest.mark.parametrize("kind", ["api", "pay"])
def test_huge_finite_values_do_not_poison_aggregation(sub_settings: Any, kind: str) -> None:
    """Two accepted 1e308 values sum to inf: the aggregation must neither fail nor count twice.

    A Lua error in APPLY leaves the writes made before it, and the batch stays leased.
    """
    monitor = MetricsMonitor(settings=sub_settings(shards=1))
    try:
        refused = 0
        for _ in range(2):
            try:
                if kind == "api":
                    monitor.track_api_request("/huge/", 1e308, 200)
                else:
                    monitor.track_payment_failure("Huge", 1e308)
            except ValueError as exc:
                assert ("response_time" if kind == "api" else "amount") in str(exc)
                refused += 1
        monitor.track_api_request("/ok/", 0.1, 200)
        assert monitor.flush(timeout=5)
        monitor.aggregate()
        summary = monitor.get_metrics_summary()
        assert summary["api"]["/ok/"]["total_requests"] == 1
        if kind == "api":
            got = summary["api"].get("/huge/", {}).get("total_requests", 0)
        else:
            got = summary["payments"]["by_reason"].get("Huge", 0)
        assert got + refused + summary["dropped_events"]["malformed"] == 2
        assert got == 0 or refused == 0
    finally:
        _close(monitor)
