"""Argument validation of the track calls: errors name the argument."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from monitor_worker.events import (
    API,
    BLOCK,
    MARKER,
    RUNS,
    check_api,
    check_payment,
    check_timestamp,
    chunk_blocks,
    decode_runs,
    element_count,
    encode_chunk,
    encode_runs,
)


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


# -- the raw-list chunk -------------------------------------------------------------------------

NOW = 1_729_411_230.0
HEAD = len(b"b|3\n" + MARKER)  # where the first block starts in a 3-event chunk


def _chunk(*runs: tuple[str, list[tuple[float, float, int]]]) -> bytes:
    block = encode_runs(
        API, [(name, [(API, t, name, rt, st) for t, rt, st in ev]) for name, ev in runs]
    )
    return encode_chunk([block], sum(len(ev) for _, ev in runs))


def test_chunk_header_counts_events_for_the_store_scripts() -> None:
    chunk = _chunk(("/a/", [(NOW, 0.1, 200)] * 3), ("/b/", [(NOW, 0.2, 500)]))
    assert chunk.startswith(b"b|4\n" + MARKER)
    assert element_count(chunk) == 4


def test_chunk_round_trips_columns_exactly() -> None:
    values = [(NOW + 0.123456789, 0.1 + 0.2, 200), (NOW - 59.000001, 5e-324, 599)]
    chunk = _chunk(("/x/", values), ("é|\n\\😀", [(NOW, 1e6, 100)]))
    blocks = chunk_blocks(chunk)
    assert blocks is not None and [(k, n) for k, n, _ in blocks] == [(API, 3)]
    names, counts, ts, (rts, sts) = decode_runs(API, blocks[0][2], 3)
    assert [n.decode() for n in names] == ["/x/", "é|\n\\😀"]
    assert list(counts) == [2, 1]
    assert list(zip(ts, rts, sts, strict=True)) == [*values, (NOW, 1e6, 100)]


def test_previous_text_elements_are_not_chunks() -> None:
    assert chunk_blocks(b"b|1\na|1729411230.0|0.1|200|/x/") is None
    assert chunk_blocks(b"a|1729411230.0|0.1|200|/x/") is None


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c[:-1], id="cut-last-byte"),
        pytest.param(lambda c: c[: len(c) // 2], id="cut-half"),
        pytest.param(lambda c: c + b"\x00", id="trailing-byte"),
        pytest.param(lambda c: c.replace(b"b|3\n", b"b|4\n", 1), id="header-count-off"),
        pytest.param(lambda c: c.replace(b"b|3\n", b"b|x\n", 1), id="header-not-a-number"),
        pytest.param(
            lambda c: c[:HEAD] + BLOCK.pack(b"a", 3, 10**9) + c[HEAD + BLOCK.size :],
            id="huge-block",
        ),
        pytest.param(
            lambda c: c[:HEAD] + BLOCK.pack(b"a", 3, 4) + RUNS.pack(2**31), id="runs-beyond-block"
        ),
        pytest.param(
            lambda c: c[:HEAD] + BLOCK.pack(b"a", 3, 0) + c[HEAD + BLOCK.size :],
            id="block-too-short",
        ),
    ],
)
def test_broken_chunk_structure_raises(mutate: Any) -> None:
    chunk = _chunk(("/a/", [(NOW, 0.1, 200)] * 2), ("/b/", [(NOW, 0.2, 200)]))
    assert chunk[HEAD : HEAD + 1] == b"a"
    broken = mutate(chunk)
    with pytest.raises(ValueError):
        blocks = chunk_blocks(broken)
        assert blocks is not None
        for kind, n, payload in blocks:
            decode_runs(kind, payload, n)


def test_run_lengths_must_add_up_to_the_block() -> None:
    chunk = _chunk(("/a/", [(NOW, 0.1, 200)] * 2))
    blocks = chunk_blocks(chunk)
    assert blocks is not None
    with pytest.raises(ValueError, match="run lengths"):
        decode_runs(API, blocks[0][2], 3)


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200)


@given(names=st.lists(TEXT, min_size=1, max_size=5, unique=True))
@hsettings(max_examples=100, deadline=None, derandomize=True, database=None)
def test_any_name_round_trips(names: list[str]) -> None:
    chunk = _chunk(*[(n, [(NOW, 0.1, 200)]) for n in names])
    blocks = chunk_blocks(chunk)
    assert blocks is not None
    decoded, _, _, _ = decode_runs(API, blocks[0][2], len(names))
    assert [n.decode() for n in decoded] == names
