"""The Redis pipeline end to end on a real server: exact counts, windows, exactly-once."""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import multiprocessing
import random
import time
from typing import Any

import pytest
import redis

from monitor_worker.config import Settings
from monitor_worker.errors import MonitorError
from monitor_worker.events import encode_api
from monitor_worker.keys import Keys, shard_of
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import (
    Aggregator,
    Scripts,
    connect,
    pending_count,
    push_batches,
    read_totals,
    read_window,
)
from monitor_worker.windows import bucket_of, window_start

from .conftest import free_port


def _generate(n: int, now: float, seed: int = 3, span_s: float = 3000) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    eps = ["/api/review/today/", "/api/content/", "/api/accounts/login/", "/api/users/<id>/"]
    return [
        (
            rng.choice(eps),
            rng.lognormvariate(-1.2, 1.0),
            rng.choice([200, 200, 200, 404, 500, 502]),
            now - rng.uniform(0, span_s),
        )
        for _ in range(n)
    ]


def _reference(events: list[tuple[Any, ...]], now: float, window_s: int = 3600) -> dict[str, Any]:
    start, end = window_start(now, window_s), bucket_of(now)
    ref: dict[str, Any] = {}
    for ep, rt, status, ts in events:
        if not start <= bucket_of(ts) <= end:
            continue
        r = ref.setdefault(ep, {"n": 0, "errors": 0, "sum": 0.0, "values": []})
        r["n"] += 1
        r["errors"] += status >= 500
        r["sum"] += rt
        r["values"].append(rt)
    return ref


def _assert_matches(summary: dict[str, Any], ref: dict[str, Any]) -> None:
    assert set(summary["api"]) == set(ref)
    for ep, r in ref.items():
        got = summary["api"][ep]
        assert got["total_requests"] == r["n"]
        assert got["error_count"] == r["errors"]
        assert got["error_rate"] == pytest.approx(100.0 * r["errors"] / r["n"], rel=1e-12)
        assert got["avg_response_time"] == pytest.approx(r["sum"] / r["n"], rel=1e-9)
        values = sorted(r["values"])
        exact = values[math.ceil(0.95 * len(values)) - 1]
        assert abs(got["p95_response_time"] - exact) <= 0.01 * exact


def _track(monitor: MetricsMonitor, events: list[tuple[Any, ...]]) -> None:
    for ep, rt, status, ts in events:
        monitor.track_api_request(ep, rt, status, timestamp=ts)


def test_exact_counts_before_and_after_aggregation(settings: Settings) -> None:
    now = time.time()
    events = _generate(6_000, now)
    monitor = MetricsMonitor(settings=settings)
    _track(monitor, events)
    assert monitor.flush(timeout=10)
    ref = _reference(events, now)
    before = monitor.get_metrics_summary(now=now)
    assert before["pending_events"] == len(events)
    _assert_matches(before, ref)
    result = monitor.aggregate()
    assert result.events == len(events)
    after = monitor.get_metrics_summary(now=now)
    assert after["pending_events"] == 0
    _assert_matches(after, ref)
    monitor.close()


def test_summary_shape_and_payments(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    from decimal import Decimal

    monitor.track_payment_failure("Card declined", 10000)
    monitor.track_payment_failure("Card declined", Decimal("0.50"))
    monitor.track_payment_failure("Insufficient funds", 2.25)
    monitor.track_api_request("/api/content/", 0.35, 200)
    summary = monitor.get_metrics_summary()
    for key in (
        "timestamp",
        "window_seconds",
        "api",
        "payments",
        "celery",
        "pending_events",
        "dropped_events",
        "endpoints_folded",
    ):
        assert key in summary
    assert summary["payments"]["failures_last_hour"] == 3
    assert summary["payments"]["by_reason"] == {"Card declined": 2, "Insufficient funds": 1}
    assert summary["payments"]["amount_total"] == pytest.approx(10002.75)
    assert summary["dropped_events"] == {
        "malformed": 0,
        "buffer_overflow": 0,
        "raw_trimmed": 0,
        "too_old": 0,
    }
    import json

    json.dumps(summary)
    monitor.close()


@pytest.mark.parametrize("aggregate_first", [False, True])
def test_window_expiry_with_explicit_timestamps(settings: Settings, aggregate_first: bool) -> None:
    t0 = time.time() - 7000
    monitor = MetricsMonitor(settings=settings)
    for _ in range(10):
        monitor.track_api_request("/old/", 0.1, 200, timestamp=t0)
    monitor.flush(5)
    if aggregate_first:
        monitor.aggregate()
    inside = monitor.get_metrics_summary(now=t0 + 3600 - 61)
    outside = monitor.get_metrics_summary(now=t0 + 3600 + 61)
    assert inside["api"]["/old/"]["total_requests"] == 10
    assert "/old/" not in outside["api"]
    assert "/old/" not in monitor.get_metrics_summary()["api"]
    monitor.close()


def test_roll_moves_with_time(settings: Settings) -> None:
    """The rolling window subtracts buckets that leave it: same answer as a fresh sum."""
    real = time.time()
    t1 = real - 1500
    events = _generate(4_000, t1, seed=9, span_s=5000)
    monitor = MetricsMonitor(settings=settings)
    _track(monitor, events)
    monitor.flush(5)
    monitor.aggregate(now=t1)
    monitor.aggregate(now=real)  # only moves the window
    summary = monitor.get_metrics_summary(now=real)
    _assert_matches(summary, _reference(events, real))
    monitor.close()


def test_malformed_raw_entries_skipped_and_counted(settings: Settings) -> None:
    client = connect(settings)
    sk = Keys(settings.key_prefix, settings.shards).shard(1)
    now = time.time()
    good = [encode_api(now, "/good/", 0.1, 200 if i % 2 else 500) for i in range(10)]
    bad = [b"garbage", b"a|x|y|z|/good/", b"\xff\xfe\x00", b"a|1|0.1|200|\xff"]
    client.lpush(sk.raw, *(good[:5] + bad + good[5:]))
    monitor = MetricsMonitor(settings=settings)
    assert monitor.get_metrics_summary()["dropped_events"]["malformed"] == 4
    monitor.aggregate()
    summary = monitor.get_metrics_summary()
    assert summary["api"]["/good/"]["total_requests"] == 10
    assert summary["api"]["/good/"]["error_count"] == 5
    assert summary["dropped_events"]["malformed"] == 4
    monitor.close()


def test_aggregation_killed_between_claim_and_apply(settings: Settings) -> None:
    now = time.time()
    events = _generate(3_000, now, seed=5)
    monitor = MetricsMonitor(settings=settings)
    _track(monitor, events)
    monitor.flush(5)
    client = connect(settings)
    dying = Aggregator(client, settings)
    dying.drain(stop_after_claim=True)  # claimed a batch, then "died"
    assert pending_count(client, settings) == len(events)
    # the claimed batch is still counted by a reader
    _assert_matches(monitor.get_metrics_summary(now=now), _reference(events, now))
    # others drain the rest; the leased batch waits for its lease to run out
    Aggregator(client, settings).drain()
    assert pending_count(client, settings) > 0
    keys = Keys(settings.key_prefix, settings.shards)
    for sk in keys.all_shards():  # the lease runs out
        for member in client.zrange(sk.leases, 0, -1):
            client.zadd(sk.leases, {member: 0})
    result = Aggregator(client, settings).drain()
    assert result.reclaimed == 1
    assert pending_count(client, settings) == 0
    _assert_matches(monitor.get_metrics_summary(now=now), _reference(events, now))
    monitor.close()


def test_applying_a_batch_twice_counts_it_once(settings: Settings) -> None:
    client = connect(settings)
    sk = Keys(settings.key_prefix, settings.shards).shard(0)
    now = time.time()
    client.lpush(sk.raw, *[encode_api(now, "/once/", 0.2, 200) for _ in range(50)])
    agg = Aggregator(client, settings)
    batch_id, entries, _ = agg._claim(sk)
    assert batch_id is not None and len(entries) == 50
    assert agg._apply(sk, batch_id, entries, now) == 1
    assert agg._apply(sk, batch_id, entries, now) == 0  # a retried call or a second aggregator
    summary = read_window(client, settings, now)
    assert summary.window.api["/once/"].count == 50


def _produce(settings: Settings, seed: int, n: int, now: float) -> None:
    monitor = MetricsMonitor(settings=settings)
    rng = random.Random(seed)
    for i in range(n):
        monitor.track_api_request(
            f"/p/{i % 7}/",
            rng.random(),
            500 if i % 10 == 0 else 200,
            timestamp=now - rng.uniform(0, 600),
        )
    assert monitor.flush(timeout=30)


def _drain(settings: Settings, stop_at: float) -> None:
    client = connect(settings)
    agg = Aggregator(client, settings)
    while time.time() < stop_at:
        agg.drain()


def test_four_processes_track_concurrently_exact_total(settings: Settings) -> None:
    ctx = multiprocessing.get_context("fork")
    now = time.time()
    producers = [ctx.Process(target=_produce, args=(settings, s, 5_000, now)) for s in range(4)]
    drainers = [ctx.Process(target=_drain, args=(settings, time.time() + 4)) for _ in range(2)]
    for p in producers + drainers:
        p.start()
    for p in producers + drainers:
        p.join(60)
        assert p.exitcode == 0
    monitor = MetricsMonitor(settings=settings)
    monitor.aggregate()
    summary = monitor.get_metrics_summary()
    assert sum(s["total_requests"] for s in summary["api"].values()) == 20_000
    assert sum(s["error_count"] for s in summary["api"].values()) == 4 * 500
    monitor.close()


def test_cardinality_cap_folds_into_other(settings: Settings) -> None:
    capped = settings.with_overrides(max_endpoints=5)
    monitor = MetricsMonitor(settings=capped)
    for i in range(12):
        for _ in range(3):
            monitor.track_api_request(f"/api/users/{i}/", 0.1, 200)
    monitor.flush(5)
    monitor.aggregate()
    summary = monitor.get_metrics_summary()
    named = [ep for ep in summary["api"] if ep != "__other__"]
    assert len(named) == 5
    assert summary["api"]["__other__"]["total_requests"] == 7 * 3
    assert summary["endpoints_folded"] == 21
    client = connect(capped)
    assert client.scard(Keys(capped.key_prefix, capped.shards).endpoints) == 5
    monitor.close()


def test_unreachable_store_raises_monitor_error() -> None:
    dead = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="x:")
    monitor = MetricsMonitor(
        settings=dead, redis=redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    )
    with pytest.raises(MonitorError, match="unreachable"):
        monitor.get_metrics_summary()


def test_a_large_backlog_is_counted_but_read_only_in_part(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor_worker.store as store

    monkeypatch.setattr(store, "PENDING_READ_MAX", 4_000)  # 1,000 per shard here
    monitor = MetricsMonitor(settings=settings)
    for _ in range(6_000):
        monitor.track_api_request("/backlog/", 0.1, 200)
    monitor.flush(10)
    summary = monitor.get_metrics_summary()
    assert summary["pending_events"] == 6_000
    assert summary["api"]["/backlog/"]["total_requests"] <= 4_000
    monitor.aggregate()
    summary = monitor.get_metrics_summary()
    assert summary["pending_events"] == 0
    assert summary["api"]["/backlog/"]["total_requests"] == 6_000
    monitor.close()


def test_drain_rejects_unknown_shards(settings: Settings) -> None:
    with pytest.raises(ValueError, match="shards"):
        Aggregator(connect(settings), settings).drain([settings.shards])


def test_raw_lists_are_capped_and_trimmed_events_counted(settings: Settings) -> None:
    capped = settings.with_overrides(raw_max=1_000, flush_batch=100, shards=1)
    monitor = MetricsMonitor(settings=capped)
    for _ in range(5):  # 5 flushes of 500 events each
        for _ in range(500):
            monitor.track_api_request("/capped/", 0.1, 200)
        assert monitor.flush(10)
    client = connect(capped)
    assert pending_count(client, capped) <= 1_000
    monitor.aggregate()
    summary = monitor.get_metrics_summary()
    kept = summary["api"]["/capped/"]["total_requests"]
    assert kept <= 1_000
    assert kept + summary["dropped_events"]["raw_trimmed"] == 2_500
    monitor.close()


def test_every_key_carries_a_ttl(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    for i in range(200):
        monitor.track_api_request(f"/ttl/{i % 5}/", 0.1, 200)
        monitor.track_payment_failure("Card declined", 5)
    monitor.flush(5)
    client = connect(settings)
    Aggregator(client, settings).drain(stop_after_claim=True)  # leave a leased batch too
    monitor.aggregate(shards=[0])
    monitor.get_metrics_summary()
    keys = list(client.scan_iter(match=settings.key_prefix + "*", count=1000))
    assert keys
    no_ttl = [k for k in keys if client.ttl(k) < 0]
    assert no_ttl == []
    monitor.close()


def _previous_chunk(events: list[tuple[Any, ...]]) -> bytes:
    """A flush chunk as the previous version's flusher wrote it (text lines, float reprs)."""
    lines = [
        f"a|{ts!r}|{rt!r}|{status}|{ep}"  # these endpoints hold no \\ or newline
        for ep, rt, status, ts in events
    ]
    return f"b|{len(lines)}\n{chr(10).join(lines)}".encode()


def test_rolling_upgrade_reads_the_previous_versions_elements(settings: Settings) -> None:
    """Apps not yet upgraded keep pushing text chunks beside the new columnar ones: the new
    aggregator (and a summary reading the raw lists) counts both exactly."""
    now = time.time()
    old_events = _generate(3_000, now, seed=11)
    new_events = _generate(3_000, now, seed=12)
    client = connect(settings)
    keys = Keys(settings.key_prefix, settings.shards)
    by_shard: dict[int, list[tuple[Any, ...]]] = {}
    for ev in old_events:
        by_shard.setdefault(shard_of(ev[0], settings.shards), []).append(ev)
    batches = [(s, f"old-{s}", len(evs), _previous_chunk(evs)) for s, evs in by_shard.items()]
    push_batches(client, Scripts.of(client), settings, batches)
    monitor = MetricsMonitor(settings=settings)
    _track(monitor, new_events)
    assert monitor.flush(timeout=10)
    raw = [e for sk in keys.all_shards() for e in client.lrange(sk.raw, 0, -1)]
    assert {e.startswith(b"b|") and b"\na|" in e for e in raw} == {True, False}
    ref = _reference(old_events + new_events, now)
    before = monitor.get_metrics_summary(now=now)
    assert before["pending_events"] == 6_000
    _assert_matches(before, ref)
    assert monitor.aggregate().events == 6_000
    after = monitor.get_metrics_summary(now=now)
    _assert_matches(after, ref)
    assert after["pending_events"] == 0
    assert not any(after["dropped_events"].values())


def test_trimmed_events_show_in_the_summary_at_once(settings: Settings) -> None:
    """With aggregation stopped, what the raw-list cap trims is counted before any aggregator
    runs, and counted once after it does."""
    capped = settings.with_overrides(raw_max=1_000, flush_batch=100)
    monitor = MetricsMonitor(settings=capped)
    for _ in range(5):  # 10,000 events on one endpoint in 5 flushes of 2,000
        for _ in range(2_000):
            monitor.track_api_request("/trimmed/", 0.1, 200)
        assert monitor.flush(10)
    before = monitor.get_metrics_summary()
    assert before["api"]["/trimmed/"]["total_requests"] == 1_000
    assert before["dropped_events"]["raw_trimmed"] == 9_000
    monitor.aggregate()
    after = monitor.get_metrics_summary()
    assert after["api"]["/trimmed/"]["total_requests"] == 1_000
    assert after["dropped_events"]["raw_trimmed"] == 9_000
    monitor.close()


def test_folded_reasons_are_counted_apart_from_folded_endpoints(settings: Settings) -> None:
    capped = settings.with_overrides(max_reasons=2, max_endpoints=3)
    monitor = MetricsMonitor(settings=capped)
    for i in range(5):
        for _ in range(3):
            monitor.track_payment_failure(f"reason {i}", 10)
            monitor.track_api_request(f"/folded/{i}/", 0.1, 200)
    assert monitor.flush(10)
    pending = monitor.get_metrics_summary()  # folded on the fly, as an aggregator would
    monitor.aggregate()
    aggregated = monitor.get_metrics_summary()
    for summary in (pending, aggregated):
        assert summary["endpoints_folded"] == 2 * 3
        assert summary["reasons_folded"] == 3 * 3
        assert summary["payments"]["by_reason"]["__other__"] == 3 * 3
    monitor.close()


def test_totals_count_every_applied_event_once(settings: Settings) -> None:
    """The /metrics counters: kept with the buckets, never lowered as the window slides."""
    monitor = MetricsMonitor(settings=settings)
    old = time.time() - 2 * settings.window_s + 600  # outside the window, inside bucket TTL
    for i in range(10):
        monitor.track_api_request("/totals/", 0.1, 500 if i < 4 else 200)
        monitor.track_api_request("/totals/", 0.1, 200, timestamp=old)
    monitor.track_payment_failure("Card declined", 10)
    assert monitor.flush(10)
    client = connect(settings)
    assert read_totals(client, settings) == {"requests": {}, "errors": {}, "payment_failures": {}}
    monitor.aggregate()
    monitor.aggregate()  # applying again counts nothing
    totals = read_totals(client, settings)
    assert totals["requests"] == {"/totals/": 20} and totals["errors"] == {"/totals/": 4}
    assert totals["payment_failures"] == {"Card declined": 1}
    assert monitor.get_metrics_summary()["api"]["/totals/"]["total_requests"] == 10
    monitor.close()


def _many_small_batches(
    settings: Settings, n: int, seed: int
) -> tuple[Settings, MetricsMonitor, float, list[tuple[Any, ...]]]:
    """n events tracked and flushed in chunks of 50, to be claimed in batches of about 200."""
    small = dataclasses.replace(settings, aggregate_batch=200, flush_batch=50)
    now = time.time()
    events = _generate(n, now, seed=seed)
    monitor = MetricsMonitor(settings=small)
    _track(monitor, events)
    assert monitor.flush(timeout=10)
    return small, monitor, now, events


def test_pipelined_drain_applies_every_batch_once(settings: Settings) -> None:
    """Many batches per shard: Redis applies one while the next is folded; every batch is
    counted exactly once, and the cycle collector is back on afterwards."""
    small, monitor, now, events = _many_small_batches(settings, 6_000, seed=11)
    applied: list[str] = []
    agg = Aggregator(connect(small), small)
    agg.scripts = copy.copy(agg.scripts)  # its own, to wrap APPLY
    apply = agg.scripts.apply

    def recording_apply(**call: Any) -> Any:
        applied.append(call["args"][1])
        return apply(**call)

    agg.scripts.apply = recording_apply  # type: ignore[assignment]
    result = agg.drain()
    assert result.events == len(events)
    assert result.batches == len([b for b in applied if b]) >= 20
    assert len(set(applied) - {""}) == result.batches  # no batch applied twice
    assert gc.isenabled()
    _assert_matches(monitor.get_metrics_summary(now=now), _reference(events, now))
    assert pending_count(connect(small), small) == 0
    monitor.close()


@pytest.mark.parametrize("failing", ["apply", "fold"])
def test_a_failed_step_raises_from_the_drain_and_loses_nothing(
    settings: Settings, failing: str
) -> None:
    """An APPLY that fails (in the applying thread) or a fold that fails (in the draining
    one) ends the drain with that error; the batches claimed by then stay leased and are
    taken over once their leases run out, each counted once."""
    small, monitor, now, events = _many_small_batches(settings, 4_000, seed=12)
    client = connect(small)
    agg = Aggregator(client, small)
    agg.scripts = copy.copy(agg.scripts)
    calls = 0

    def third_call_fails(real: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise redis.ConnectionError("the store went away")
            return real(*args, **kwargs)

        return step

    if failing == "apply":
        agg.scripts.apply = third_call_fails(agg.scripts.apply)  # type: ignore[assignment]
    else:
        agg._apply_call = third_call_fails(agg._apply_call)  # type: ignore[method-assign]
    with pytest.raises(redis.ConnectionError, match="went away"):
        agg.drain()
    assert gc.isenabled()
    assert pending_count(client, small) > 0
    for sk in Keys(small.key_prefix, small.shards).all_shards():  # the leases run out
        for member in client.zrange(sk.leases, 0, -1):
            client.zadd(sk.leases, {member: 0})
    result = Aggregator(client, small).drain()
    assert result.reclaimed >= 1
    assert pending_count(client, small) == 0
    _assert_matches(monitor.get_metrics_summary(now=now), _reference(events, now))
    monitor.close()
