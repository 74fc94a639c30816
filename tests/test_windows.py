"""Pure window maths: buckets, the sketch, folding raw entries (no Redis)."""

from __future__ import annotations

import math
import random

import pytest

from monitor_worker import events
from monitor_worker.fold import fold
from monitor_worker.windows import (
    ZERO_BIN,
    Delta,
    Window,
    bin_of,
    bin_value,
    bucket_of,
    cap_names,
    quantile,
    window_start,
)

NOW = 1_729_411_200.0  # a minute boundary


@pytest.mark.parametrize(
    ("ts", "bucket"),
    [(0.0, 0), (59.999, 0), (60.0, 1), (NOW, NOW // 60), (NOW + 59.5, NOW // 60)],
)
def test_bucket_of(ts: float, bucket: float) -> None:
    assert bucket_of(ts) == int(bucket)


@pytest.mark.parametrize("offset", [0.0, 1.0, 30.0, 59.0, 59.999])
def test_window_bounds(offset: float) -> None:
    now = NOW + offset
    start = window_start(now, 3600)
    # newer than window - one bucket: always inside
    assert bucket_of(now - 3600 + 60 + 1e-3) >= start
    # older than window + one bucket: never inside
    assert bucket_of(now - 3600 - 60 - 1e-3) < start


@pytest.mark.parametrize("value", [1e-6, 1e-4, 0.003, 0.35, 1.0, 2.0, 7.5, 120.0, 3600.0])
def test_bin_value_within_one_percent(value: float) -> None:
    assert abs(bin_value(bin_of(value)) - value) <= 0.01 * value


def test_tiny_values_share_the_zero_bin() -> None:
    assert bin_of(0.0) == ZERO_BIN
    assert bin_value(ZERO_BIN) == 0.0


def test_p95_within_one_percent_on_lognormal() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-1.0, 1.2) for _ in range(20_000)]
    bins: dict[int, int] = {}
    for v in values:
        bins[bin_of(v)] = bins.get(bin_of(v), 0) + 1
    exact = sorted(values)[math.ceil(0.95 * len(values)) - 1]
    got = quantile(bins, 0.95)
    assert got is not None
    assert abs(got - exact) <= 0.01 * exact


def test_quantile_of_empty_sketch_is_none() -> None:
    assert quantile({}, 0.95) is None


def _api(ts: float, ep: str, rt: float, status: int) -> bytes:
    return events.encode_api(ts, ep, rt, status)


def test_fold_counts_exactly_against_a_reference() -> None:
    rng = random.Random(1)
    entries = []
    ref: dict[str, list[int]] = {}
    for _ in range(5_000):
        ep = rng.choice(["/a/", "/b/", "/c|pipe/"])
        status = rng.choice([200, 201, 404, 500, 503])
        rt = rng.uniform(0.0, 4.0)
        entries.append(_api(NOW - rng.uniform(0, 3000), ep, rt, status))
        r = ref.setdefault(ep, [0, 0, 0])
        r[0] += 1
        r[1] += status >= 500
        r[2] += rt <= 2.0
    delta = fold(entries, now=NOW, error_status_min=500, threshold_s=2.0, oldest_bucket=0)
    window = Window()
    window.add_delta(delta, 0, bucket_of(NOW))
    for ep, (count, errors, ok) in ref.items():
        acc = window.api[ep]
        assert (acc.count, acc.errors, acc.at_or_below) == (count, errors, ok)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"garbage",
        b"a|notanumber|0.1|200|/x/",
        b"a|1729411200.0|-1|200|/x/",
        b"a|1729411200.0|nan|200|/x/",
        b"a|1729411200.0|inf|200|/x/",
        b"a|1729411200.0|0.1|99|/x/",
        b"a|1729411200.0|0.1|200|",
        b"a|1729411200.0|0.1|200|\xff\xfe",
        b"a|1729411200.0|0.1",
        b"p|1729411200.0|-5|Card",
        b"p|1729411200.0|1e400|Card",
        b"o|1729411200.0|-3",
        b"z|1|2|3",
        b"a|1729411200.0|0.1|200|" + b"x" * 201,
    ],
)
def test_malformed_entries_are_skipped_and_counted(bad: bytes) -> None:
    good = [_api(NOW, "/ok/", 0.1, 200), _api(NOW, "/ok/", 0.2, 500)]
    delta = fold(
        [good[0], bad, good[1]], now=NOW, error_status_min=500, threshold_s=2.0, oldest_bucket=0
    )
    assert delta.counters[(bucket_of(NOW), "malformed")] == 1
    acc = delta.api[(bucket_of(NOW), "/ok/")]
    assert (acc.count, acc.errors) == (2, 1)


def test_future_events_count_now_and_old_ones_are_too_old() -> None:
    entries = [_api(NOW + 7200, "/f/", 0.1, 200), _api(NOW - 10 * 86400, "/o/", 0.1, 200)]
    delta = fold(
        entries, now=NOW, error_status_min=500, threshold_s=2.0, oldest_bucket=bucket_of(NOW) - 120
    )
    assert delta.api[(bucket_of(NOW), "/f/")].count == 1
    assert delta.counters[(bucket_of(NOW), "too_old")] == 1


@pytest.mark.parametrize(("status_min", "errors"), [(500, 1), (400, 2)])
def test_error_status_min_decides(status_min: int, errors: int) -> None:
    entries = [_api(NOW, "/e/", 0.1, s) for s in (200, 404, 500)]
    delta = fold(entries, now=NOW, error_status_min=status_min, threshold_s=2.0, oldest_bucket=0)
    assert delta.api[(bucket_of(NOW), "/e/")].errors == errors


def test_payments_and_overflow() -> None:
    entries = [
        events.encode_payment(NOW, "Card declined", 10000.0),
        events.encode_payment(NOW, "Card declined", 0.5),
        events.encode_payment(NOW, "Insufficient funds", 3.0),
        events.encode_overflow(42),
    ]
    delta = fold(entries, now=NOW, error_status_min=500, threshold_s=2.0, oldest_bucket=0)
    window = Window()
    window.add_delta(delta, 0, bucket_of(NOW))
    pay = window.payments_section()
    assert pay["failures_last_hour"] == 3
    assert pay["by_reason"] == {"Card declined": 2, "Insufficient funds": 1}
    assert pay["amount_total"] == 10003.5
    assert window.dropped()["buffer_overflow"] == 42


def test_cap_names_folds_into_other_and_counts() -> None:
    entries = [_api(NOW, f"/u/{i}/", 0.1, 200) for i in range(5)]
    delta = fold(entries, now=NOW, error_status_min=500, threshold_s=2.0, oldest_bucket=0)
    cap_names(delta, {"/u/3/", "/u/4/"}, set(), NOW)
    b = bucket_of(NOW)
    assert delta.api[(b, "__other__")].count == 2
    assert (b, "/u/3/") not in delta.api
    assert delta.counters[(b, "folded")] == 2


def test_window_add_fields_round_trip_and_subtract() -> None:
    fields = {
        b"c:/x/": b"3",
        b"e:/x/": b"1",
        b"s:/x/": b"1.5",
        b"l:/x/": b"3",
        b"h:/x/": b"-10:2,5:1",
        b"pc:Card": b"2",
        b"pa:Card": b"20",
        b"x:malformed": b"4",
        b"_:start": b"123",
    }
    window = Window()
    window.add_fields(fields)
    window.add_fields(fields)
    window.add_fields(fields, -1)
    section = window.api_section()["/x/"]
    assert section["total_requests"] == 3
    assert section["error_count"] == 1
    assert section["avg_response_time"] == pytest.approx(0.5)
    assert window.payments_section()["by_reason"] == {"Card": 2}
    assert window.dropped()["malformed"] == 4


def test_empty_delta_has_nothing() -> None:
    assert Delta().events == 0


# -- the columnar chunk and the previous version's text lines --------------------------------


def _api_block(events_: list[tuple[float, str, float, int]]) -> bytes:
    runs: dict[str, list[tuple[str, float, str, float, int]]] = {}
    for ts, ep, rt, status in events_:
        runs.setdefault(ep, []).append((events.API, ts, ep, rt, status))
    return events.encode_runs(events.API, list(runs.items()))


def _chunk(events_: list[tuple[float, str, float, int]]) -> bytes:
    return events.encode_chunk([_api_block(events_)], len(events_))


def _text_line(ts: float, ep: str, rt: float, status: int) -> bytes:
    """An API request as the previous version wrote it."""
    name = ep.replace("\\", "\\\\").replace("\n", "\\n")
    return f"a|{ts!r}|{rt!r}|{status}|{name}".encode()


def _totals(delta: Delta) -> dict[tuple[int, str], tuple[int, int, int, dict[int, int]]]:
    return {
        k: (a.count, a.errors, a.at_or_below, dict(a.bins)) for k, a in sorted(delta.api.items())
    }


def _fold_all(entries: list[bytes], oldest_bucket: int = 0) -> Delta:
    return fold(
        entries, now=NOW, error_status_min=500, threshold_s=2.0, oldest_bucket=oldest_bucket
    )


def _random_events(
    n: int, seed: int, span_s: float, endpoints: int = 4
) -> list[tuple[float, str, float, int]]:
    rng = random.Random(seed)
    names = ["/a/", "/b/<id>/", "é|\n\\{s1}", "/c/", *[f"/e/{i}/" for i in range(endpoints - 4)]]
    return [
        (
            NOW - rng.uniform(0, span_s),
            rng.choice(names),
            rng.choice([0.0, 5e-7, 2.0, rng.lognormvariate(-1, 1.5)]),
            rng.choice([200, 404, 500, 503]),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("endpoints", [4, 1_000], ids=["long-runs", "short-runs"])
@pytest.mark.parametrize("span_s", [0.5, 150.0, 3000.0], ids=["one-bucket", "3-buckets", "50"])
def test_chunk_and_previous_text_fold_alike(span_s: float, endpoints: int) -> None:
    """Both of the fold's paths (column passes for long runs, event by event for short ones)
    and the previous version's text lines give the same counts."""
    evs = _random_events(3_000, seed=int(span_s), span_s=span_s, endpoints=endpoints)
    new = _fold_all([_chunk(evs[i : i + 700]) for i in range(0, len(evs), 700)])
    old = b"b|%d\n" % len(evs) + b"\n".join(_text_line(*e) for e in evs)
    previous = _fold_all([old])
    assert _totals(new) == _totals(previous)
    for key, acc in new.api.items():
        assert acc.sum_s == pytest.approx(previous.api[key].sum_s, rel=1e-12)
    assert new.events == previous.events == len(evs)
    assert not new.counters


def test_chunks_and_previous_elements_mix() -> None:
    evs = _random_events(400, seed=3, span_s=100)
    entries = [_chunk(evs[:200]), *[_text_line(*e) for e in evs[200:300]]]
    entries.append(b"b|100\n" + b"\n".join(_text_line(*e) for e in evs[300:]))
    assert _totals(_fold_all(entries)) == _totals(_fold_all([_chunk(evs)]))


def test_bad_values_in_a_chunk_are_skipped_one_by_one() -> None:
    good = [(NOW, "/ok/", 0.1, 200), (NOW, "/ok/", 0.2, 500)]
    bad = [
        (NOW, "/ok/", math.nan, 200),
        (NOW, "/ok/", math.inf, 200),
        (NOW, "/ok/", -1.0, 200),
        (NOW, "/ok/", 2e6, 200),
        (NOW, "/ok/", 0.1, 99),
        (NOW, "/ok/", 0.1, 600),
        (math.nan, "/ok/", 0.1, 200),
        (0.0, "/ok/", 0.1, 200),
        (1e12, "/ok/", 0.1, 200),
    ]
    delta = _fold_all([_chunk([good[0], *bad, good[1]])])
    assert delta.counters == {(bucket_of(NOW), "malformed"): len(bad)}
    acc = delta.api[(bucket_of(NOW), "/ok/")]
    assert (acc.count, acc.errors, acc.sum_s) == (2, 1, pytest.approx(0.3))


def test_bad_name_skips_its_run_only() -> None:
    chunk = _chunk([(NOW, "/ok/", 0.1, 200), (NOW, "/x" + "y" * 199, 0.1, 200)])
    broken = chunk.replace(b"/x" + b"y" * 199, b"\xff" * 201)
    delta = _fold_all([broken])
    assert delta.counters == {(bucket_of(NOW), "malformed"): 1}
    assert delta.api[(bucket_of(NOW), "/ok/")].count == 1


def test_unknown_kind_and_broken_chunks_are_counted_by_their_events() -> None:
    unknown = events.BLOCK.pack(b"z", 5, 3) + b"abc"  # a kind of a newer version
    chunk = events.encode_chunk([_api_block([(NOW, "/ok/", 0.1, 200)] * 2), unknown], 2 + 5)
    cut = _chunk([(NOW, "/ok/", 0.1, 200)] * 7)[:-3]
    delta = _fold_all([chunk, cut])
    assert delta.api[(bucket_of(NOW), "/ok/")].count == 2
    assert delta.counters == {(bucket_of(NOW), "malformed"): 5 + 7}


@pytest.mark.parametrize("spread_buckets", [2, 20])
def test_runs_over_many_buckets_future_and_too_old(spread_buckets: int) -> None:
    b = bucket_of(NOW)
    evs = [(NOW - 60.0 * k, "/r/", 0.5, 200) for k in range(spread_buckets) for _ in range(3)]
    evs += [(NOW + 3600, "/r/", 0.5, 500), (NOW - 86400, "/r/", 0.5, 200)]
    delta = _fold_all([_chunk(evs)], oldest_bucket=b - 100)
    counts = {bucket: acc.count for (bucket, _), acc in delta.api.items()}
    assert counts == {b - k: 3 + (k == 0) for k in range(spread_buckets)}
    assert delta.api[(b, "/r/")].errors == 1
    assert delta.counters == {(b, "too_old"): 1}


def _reference_fold(
    evs: list[tuple[float, str, float, int]], oldest_bucket: int
) -> tuple[dict[tuple[int, str], tuple[int, int, int, dict[int, int]]], int]:
    """What folding these requests must give, computed event by event: per (bucket, endpoint)
    count, errors, at-or-below 2 s and bins; and how many were too old."""
    out: dict[tuple[int, str], tuple[int, int, int, dict[int, int]]] = {}
    too_old = 0
    for ts, ep, rt, status in evs:
        bucket = min(bucket_of(ts), bucket_of(NOW))
        if bucket < oldest_bucket:
            too_old += 1
            continue
        count, errors, below, bins = out.get((bucket, ep), (0, 0, 0, {}))
        bins[bin_of(rt)] = bins.get(bin_of(rt), 0) + 1
        out[bucket, ep] = (count + 1, errors + (status >= 500), below + (rt <= 2.0), bins)
    return dict(sorted(out.items())), too_old


@pytest.mark.parametrize("order", ["in-time-order", "shuffled"])
@pytest.mark.parametrize("span_s", [0.5, 150.0, 3000.0])
def test_fold_agrees_with_an_event_by_event_reference(span_s: float, order: str) -> None:
    """Columns gathered per endpoint over many chunks, put in time order when they are not,
    cut into buckets by binary search: the same counts as folding each event on its own,
    future events in the current bucket, old ones counted as too old."""
    evs = _random_events(2_000, seed=5, span_s=span_s, endpoints=12)
    evs += [(NOW + 3600, "/a/", 0.1, 500), (NOW - 86_400, "/c/", 0.1, 200)]
    evs.sort(key=lambda e: e[0])
    if order == "shuffled":
        random.Random(9).shuffle(evs)
    oldest = bucket_of(NOW) - 30
    delta = _fold_all([_chunk(evs[i : i + 150]) for i in range(0, len(evs), 150)], oldest)
    expected, too_old = _reference_fold(evs, oldest)
    assert _totals(delta) == expected
    assert delta.counters == {(bucket_of(NOW), "too_old"): too_old}
    assert too_old >= 1
    for (bucket, ep), acc in delta.api.items():
        in_bucket = [e for e in evs if min(bucket_of(e[0]), bucket_of(NOW)) == bucket]
        assert acc.sum_s == pytest.approx(sum(e[2] for e in in_bucket if e[1] == ep), rel=1e-12)
