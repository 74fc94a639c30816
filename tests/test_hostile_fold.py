"""Fuzzing the raw-list decoder: fold.fold alone, and the aggregator on a real Redis.

Every bad entry is skipped and counted as malformed; every good entry around them is counted
exactly; nothing crashes, in Python or in the store's scripts.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from monitor_worker.config import Settings
from monitor_worker.events import API, element_count, encode_chunk, encode_runs
from monitor_worker.fold import fold
from monitor_worker.keys import Keys
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.windows import bucket_of

NOW = 1_729_411_230.0
INT64_MAX = 2**63 - 1
HOSTILE_TEXT = [":", "|", "{", "}", "{s1}", "\n", "\x00", "<!channel>", "<@U123>", "é", "😀", "%"]


@dataclass(frozen=True)
class Good:
    """A valid entry: kind a (x=response time, y=status), p (x=amount text), o (x=count)."""

    kind: str
    dt: float
    x: Any
    y: int
    name: str

    def render(self, now: float) -> bytes:
        ts = repr(now + self.dt)
        if self.kind == "a":
            return f"a|{ts}|{self.x!r}|{self.y}|{self.name}".encode()
        if self.kind == "p":
            return f"p|{ts}|{self.x}|{self.name}".encode()
        return f"o|{ts}|{self.x}".encode()


@dataclass(frozen=True)
class Bad:
    """A malformed entry: raw bytes, or a good entry cut short, given a bad field or name."""

    how: str
    base: Good | None
    arg: Any

    def render(self, now: float) -> bytes:
        if self.how == "raw":
            return bytes(self.arg)
        assert self.base is not None
        data = self.base.render(now)
        seps = [i for i, c in enumerate(data) if c == ord("|")]
        last = seps[{"a": 3, "p": 2, "o": 1}[self.base.kind]]
        if self.how == "cut":  # at or before the start of the last field
            return data[: int(self.arg * (last + 1))]
        if self.how == "name":
            return data[: last + 1] + bytes(self.arg)
        index, token = self.arg  # replace field ``index`` (1 = ts)
        parts = data.split(b"|", {"a": 4, "p": 3, "o": 2}[self.base.kind])
        parts[index] = token
        return b"|".join(parts)


names = st.one_of(
    st.sampled_from(["/api/x/", "/api/y/", "Card declined", "a" * 200, "é" * 200]),
    st.lists(st.one_of(st.characters(), st.sampled_from(HOSTILE_TEXT)), min_size=1, max_size=8)
    .map("".join)
    .filter(lambda s: 0 < len(s) <= 200),
)
offsets = st.one_of(st.floats(min_value=-3000.0, max_value=0.0), st.just(1e6))
goods = st.one_of(
    st.builds(
        Good,
        st.just("a"),
        offsets,
        st.one_of(st.floats(min_value=0.0, max_value=1e6), st.sampled_from([0.0, -0.0, 5e-324])),
        st.integers(min_value=100, max_value=599),
        names,
    ),
    st.builds(
        Good,
        st.just("p"),
        offsets,
        st.one_of(
            st.floats(min_value=0.0, max_value=1e12).map(repr),
            st.decimals(min_value=0, max_value=10**9, places=2).map(lambda d: format(d, "f")),
            st.integers(min_value=0, max_value=10**12).map(str),
        ),
        st.just(0),
        names,
    ),
    st.builds(
        Good,
        st.just("o"),
        offsets,
        st.integers(min_value=0, max_value=10**6),
        st.just(0),
        st.just(""),
    ),
)

BAD_FLOAT = [b"", b"abc", b"0x10", b"1.2.3", b"\xff", b"[]", b"None", b"1e", b"--1", b"nan",
             b"inf", b"-inf", b"1e400", b"-1", b"-0.5", b"9" * 5000 + b"e9999"]  # fmt: skip
BAD_TS = [t for t in BAD_FLOAT if t not in (b"-0.5",)] + [b"0", b"-1e300"]
BAD_STATUS = [b"", b"abc", b"200.0", b"99", b"600", b"-200", b"1e3", b"9" * 30, b"9" * 5000,
              b"\xff", b"0x1F4"]  # fmt: skip
BAD_COUNT = [b"", b"-1", b"1.5", b"abc", b"9" * 5000, b"\xff"]
BAD_NAMES = [b"", b"x" * 201, "é".encode() * 201, b"\xff", b"ok\xc3", b"\xed\xa0\x80"]


def _field_tokens(base: Good) -> st.SearchStrategy[tuple[int, bytes]]:
    if base.kind == "a":
        return st.one_of(
            st.tuples(st.just(1), st.sampled_from(BAD_TS)),
            st.tuples(st.just(2), st.sampled_from(BAD_FLOAT)),
            st.tuples(st.just(3), st.sampled_from(BAD_STATUS)),
        )
    if base.kind == "p":
        return st.one_of(
            st.tuples(st.just(1), st.sampled_from(BAD_TS)),
            st.tuples(st.just(2), st.sampled_from(BAD_FLOAT)),
        )
    return st.tuples(st.just(2), st.sampled_from(BAD_COUNT))


bads = st.one_of(
    st.builds(
        Bad,
        st.just("raw"),
        st.none(),
        st.binary(max_size=64).filter(lambda b: b[:2] not in (b"a|", b"p|", b"o|")),
    ),
    st.builds(Bad, st.just("raw"), st.none(), st.sampled_from([b"a|", b"p|", b"o|", b"a", b""])),
    st.builds(Bad, st.just("cut"), goods, st.floats(min_value=0.0, max_value=1.0)),
    st.builds(
        Bad,
        st.just("name"),
        goods.filter(lambda g: g.kind != "o"),
        st.sampled_from(BAD_NAMES),
    ),
    goods.flatmap(lambda g: st.builds(Bad, st.just("field"), st.just(g), _field_tokens(g))),
)
entries_st = st.lists(st.one_of(goods, bads), max_size=40)


@dataclass
class Expected:
    api: Counter[str]
    errors: Counter[str]
    pay: Counter[str]
    overflow: int
    bad: int


def _expected(specs: list[Good | Bad]) -> Expected:
    exp = Expected(Counter(), Counter(), Counter(), 0, 0)
    for spec in specs:
        if isinstance(spec, Bad):
            exp.bad += 1
        elif spec.kind == "a":
            exp.api[spec.name] += 1
            exp.errors[spec.name] += spec.y >= 500
        elif spec.kind == "p":
            exp.pay[spec.name] += 1
        else:
            exp.overflow += spec.x
    return exp


def _fold(entries: list[bytes], now: float = NOW) -> Any:
    return fold(
        entries,
        now=now,
        error_status_min=500,
        threshold_s=2.0,
        oldest_bucket=bucket_of(now) - 200,
    )


HSET = hsettings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@hsettings(HSET, max_examples=300)
@given(specs=entries_st)
def test_fold_skips_and_counts_every_bad_entry(specs: list[Good | Bad]) -> None:
    delta = _fold([s.render(NOW) for s in specs])
    exp = _expected(specs)
    counters: Counter[str] = Counter()
    for (_, name), n in delta.counters.items():
        counters[name] += n
    assert counters["malformed"] == exp.bad
    assert counters["overflow"] == exp.overflow
    api: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for (_, endpoint), acc in delta.api.items():
        api[endpoint] += acc.count
        errors[endpoint] += acc.errors
        assert math.isfinite(acc.sum_s) and acc.sum_s >= 0
    pay: Counter[str] = Counter()
    for (_, reason), p in delta.pay.items():
        pay[reason] += p.count
    assert (api, errors, pay) == (exp.api, exp.errors, exp.pay)
    assert delta.events == exp.api.total() + exp.pay.total()


@hsettings(HSET, max_examples=25)
@given(specs=entries_st)
@example(specs=[Bad("raw", None, b"a|" + b"9" * 1_000_000), Good("a", 0.0, 0.1, 200, "/x/")])
@example(specs=[Bad("name", Good("a", 0.0, 0.1, 200, "/x/"), b"x" * 1_000_000)])
def test_aggregator_skips_and_counts_every_bad_entry(
    rclient: redis.Redis, settings: Settings, specs: list[Good | Bad]
) -> None:
    s = settings.with_overrides(key_prefix=f"{settings.key_prefix}{uuid.uuid4().hex[:8]}:")
    now = time.time()
    shards = Keys(s.key_prefix, s.shards).all_shards()
    for i, spec in enumerate(specs):
        rclient.lpush(shards[i % len(shards)].raw, spec.render(now))
    monitor = MetricsMonitor(settings=s)
    monitor.aggregate(now=now)
    summary = monitor.get_metrics_summary(now=now)
    _assert_summary(summary, _expected(specs))


def _assert_summary(summary: dict[str, Any], exp: Expected) -> None:
    assert summary["dropped_events"]["malformed"] == exp.bad
    assert summary["dropped_events"]["buffer_overflow"] == exp.overflow
    api = {ep: v["total_requests"] for ep, v in summary["api"].items()}
    errors = {ep: v["error_count"] for ep, v in summary["api"].items()}
    assert api == dict(exp.api)
    assert errors == dict(exp.errors)
    assert summary["payments"]["by_reason"] == dict(exp.pay)
    assert summary["pending_events"] == 0


# Entries that parse but hold values the store cannot add up: a count beyond int64, sums
# beyond the float range. Each must be skipped (or kept storable), never fail the aggregation.
UNSTORABLE = {
    "count-over-int64": [b"o|{now}|99999999999999999999"],
    "counts-summing-over-int64": [b"o|{now}|6000000000000000000"] * 2,
    "rt-sum-to-inf": [b"a|{now}|1e308|200|/huge/"] * 2,
    "rt-max-float": [b"a|{now}|1.7976931348623157e308|200|/huge/"] * 2,
    "amount-sum-to-inf": [b"p|{now}|1e308|Huge"] * 2,
}


def _render(templates: list[bytes], now: float) -> list[bytes]:
    return [t.replace(b"{now}", repr(now).encode()) for t in templates]


@pytest.mark.parametrize("case", list(UNSTORABLE))
def test_fold_output_stays_storable(case: str) -> None:
    delta = _fold(_render(UNSTORABLE[case], NOW))
    for n in delta.counters.values():
        assert 0 <= n <= INT64_MAX
    for acc in delta.api.values():
        assert math.isfinite(acc.sum_s)
        assert acc.count <= INT64_MAX
    for p in delta.pay.values():
        assert math.isfinite(p.amount)


@pytest.mark.parametrize("case", list(UNSTORABLE))
def test_aggregator_survives_unstorable_entries(
    rclient: redis.Redis, settings: Settings, case: str
) -> None:
    """The aggregation must not fail, and the good events in the same batch count once.

    (A Lua error half-way through APPLY keeps the writes made before it, and the batch stays
    leased, so a summary also folds it in again from the lease list.)
    """
    s = settings.with_overrides(shards=1)
    now = time.time()
    raw = Keys(s.key_prefix, s.shards).shard(0).raw
    good = _render([b"a|{now}|0.1|200|/ok/", b"p|{now}|5|Card"], now)
    bad = _render(UNSTORABLE[case], now)
    rclient.lpush(raw, good[0], *bad, good[1])
    monitor = MetricsMonitor(settings=s)
    monitor.aggregate(now=now)
    summary = monitor.get_metrics_summary(now=now)
    assert summary["api"]["/ok/"]["total_requests"] == 1
    assert summary["payments"]["by_reason"].get("Card") == 1
    assert summary["dropped_events"]["malformed"] <= len(bad)


# -- the columnar chunk: cut, flipped and spliced bytes --------------------------------------

api_events = st.lists(
    st.tuples(
        st.floats(min_value=-3000.0, max_value=0.0),
        st.floats(min_value=0.0, max_value=1e6),
        st.integers(min_value=100, max_value=599),
        names,
    ),
    min_size=1,
    max_size=30,
)


def _chunk_of(evs: list[tuple[float, float, int, str]], now: float) -> bytes:
    runs: dict[str, list[tuple[Any, ...]]] = {}
    for dt, rt, status, name in evs:
        runs.setdefault(name, []).append((API, now + dt, name, rt, status))
    return encode_chunk([encode_runs(API, list(runs.items()))], len(evs))


@hsettings(HSET, max_examples=300)
@given(
    intact=api_events,
    hurt=api_events,
    how=st.sampled_from(["cut", "flip", "splice"]),
    at=st.floats(min_value=0.0, max_value=1.0),
    byte=st.integers(min_value=0, max_value=255),
)
def test_fold_survives_damaged_chunks(
    intact: list[tuple[float, float, int, str]],
    hurt: list[tuple[float, float, int, str]],
    how: str,
    at: float,
    byte: int,
) -> None:
    """A damaged chunk never breaks the fold or the chunks beside it; a cut one is counted
    malformed whole; a changed byte changes at most its own chunk's events."""
    good = _chunk_of(intact, NOW)
    data = bytearray(_chunk_of(hurt, NOW))
    i = min(len(data) - 1, int(at * len(data)))
    if how == "cut":
        data = data[:i]
    elif how == "flip":
        data[i] ^= byte or 1
    else:
        data[i:i] = bytes([byte])
    delta = _fold([good, bytes(data)])
    counters: Counter[str] = Counter()
    for (_, name), n in delta.counters.items():
        counters[name] += n
    api: Counter[str] = Counter()
    for (_, endpoint), acc in delta.api.items():
        api[endpoint] += acc.count
        assert math.isfinite(acc.sum_s) and acc.sum_s >= 0
    expected = Counter(name for *_, name in intact)
    damaged = api.total() - len(intact) + counters["malformed"] + counters["too_old"]
    if how == "cut":
        assert api == expected
    else:
        assert all(api[n] >= k for n, k in expected.items()), "an intact event went missing"
    assert 0 <= damaged <= max(len(hurt), element_count(bytes(data)))
