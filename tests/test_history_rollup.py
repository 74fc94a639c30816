"""Pure roll-up maths: bin encoding, merging snapshots exactly once, steps and ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor_worker.history.codec import (
    Row,
    decode_bins,
    decode_minutes,
    decode_period,
    encode_bins,
    encode_minutes,
    encode_period,
    packed_quantile,
)
from monitor_worker.history.rollup import Series, check_step, merge, merge_ranges, quantile
from monitor_worker.windows import ZERO_BIN, bin_of

DAY = 86400
T = 1_800_000_000 - 1_800_000_000 % DAY + 7200  # 02:00 UTC


@given(
    st.dictionaries(
        st.one_of(st.integers(-697, 697), st.just(ZERO_BIN)),
        st.integers(1, 2**40),
        max_size=60,
    )
)
def test_bins_round_trip(bins: dict[int, int]) -> None:
    assert decode_bins(encode_bins(bins)) == bins


def test_bins_are_as_narrow_as_their_largest_count() -> None:
    small = {bin_of(0.001 * 1.05**i): 3 for i in range(100)}
    assert len(encode_bins(small)) < 6 + 1.1 * (max(small) - min(small) + 1)
    assert len(encode_bins({1: 70_000, 2: 1})) == 5 + 2 * 4


def test_rows_round_trip() -> None:
    minutes = {0: Row(3, 1, 0.75, 0.5), 59: Row(2**40, 0, 1e6, None)}
    assert decode_minutes(encode_minutes(minutes)) == minutes
    row = Row(10, 2, 3.5, None, {4: 7, ZERO_BIN: 3})
    assert decode_period(encode_period(row)) == row
    assert decode_period(encode_period(Row(1, 0, 9.0))) == Row(1, 0, 9.0)


def _snap(n: int, t: int = T, errors: int = 0) -> tuple[str, str, int, Row]:
    return ("a", "/x/", t, Row(n, errors, 0.5 * n, None, {10: n}))


def _apply(stored: dict, *snaps: tuple[str, str, int, Row]) -> dict:  # type: ignore[type-arg]
    for snap in snaps:
        stored = {**stored, **merge([snap], stored)}
    return stored


@pytest.mark.parametrize(
    "order",
    [
        [4, 9],  # in order
        [4, 9, 9],  # the newer snapshot twice
        [4, 9, 4],  # an older snapshot merged after a newer one: ignored
        [9, 4, 4],
    ],
)
def test_a_minute_counts_once_in_its_hour_and_day(order: list[int]) -> None:
    stored = _apply({}, *[_snap(n) for n in order])
    hour, day = ("h", "a", "/x/", T - T % 3600), ("d", "a", "/x/", T - T % DAY)
    assert stored["m", "a", "/x/", T].n == 9
    assert stored[hour] == stored[day] == Row(9, 0, 4.5, None, {10: 9})


def test_minutes_of_an_hour_add_up_and_p95_is_from_the_minute() -> None:
    stored = _apply({}, _snap(3, T), _snap(5, T + 60), _snap(7, T + 60))
    assert stored["h", "a", "/x/", T - T % 3600].n == 10
    assert stored["m", "a", "/x/", T + 60].v == quantile({10: 7}, 0.95)


def test_gauges_keep_the_max_and_the_last_and_merge_idempotently() -> None:
    a = ("q", "celery", T, Row(9, 4, T + 30.0))
    b = ("q", "celery", T + 60, Row(3, 3, T + 70.0))
    stored = _apply({}, a, b, a, b)
    assert stored["h", "q", "celery", T - T % 3600] == Row(9, 3, T + 70.0)
    assert merge([a, b], stored) == {}


def test_series_merges_hours_into_steps() -> None:
    series = Series(6 * 3600)
    for h in range(6):
        series.add("a", "/x/", T - T % 21600 + h * 3600, Row(2, 1, 1.0, None, {h: 2}))
    doc = series.document([])
    assert doc["api"]["/x/"] == [
        {
            "t": T - T % 21600,
            "requests": 12,
            "errors": 6,
            "error_rate": 50.0,
            "avg_response_time": 0.5,
            "p95_response_time": quantile({h: 2 for h in range(6)}, 0.95),
        }
    ]
    assert doc["payments"] == [] and doc["celery"] == {}


@pytest.mark.parametrize("step", ["5m", "2h", "1w", "", "1M"])
def test_unknown_steps_are_refused(step: str) -> None:
    with pytest.raises(ValueError, match="step must be one of 1m, 1h, 6h, 1d"):
        check_step(step, T - 60, T, DAY)


def test_a_minute_step_older_than_minute_rows_is_refused() -> None:
    assert check_step("1m", T - DAY, T, DAY) == 60
    with pytest.raises(ValueError, match="1m rows are kept for 24 h"):
        check_step("1m", T - 2 * DAY, T, DAY)
    assert check_step("1d", T - 30 * DAY, T, DAY) == DAY


def test_gap_minutes_join_into_ranges() -> None:
    assert merge_ranges([T + 120, T, T + 60, T + 600]) == [[T, T + 180], [T + 600, T + 660]]


@given(
    st.dictionaries(
        st.one_of(st.integers(-697, 697), st.just(ZERO_BIN)),
        st.integers(1, 10**6),
        min_size=1,
        max_size=80,
    ),
    st.sampled_from([0.5, 0.95, 0.99, 1.0]),
)
def test_packed_quantile_equals_the_quantile_of_the_bins(bins: dict[int, int], q: float) -> None:
    assert packed_quantile(encode_bins(bins), q) == quantile(bins, q)
