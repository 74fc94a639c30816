"""Key and message injection through endpoint and reason text, and the cardinality caps.

User text (endpoints, payment reasons) must never collide with other names, never appear in
a key name or move a key to another cluster slot, never mention anyone on Slack, never break
Slack's limits, and never grow Redis past the caps.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.crc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from monitor_worker import rules
from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.slack import (
    MAX_BLOCKS,
    MAX_CONTEXT_TEXT,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER_TEXT,
    MAX_SECTION_TEXT,
    MAX_TEXT,
    build_payload,
)

# Names that differ from "/a/b" only in one hostile character, and other hostile text.
HOSTILE_NAMES = [
    "/a/b", "/a:b", "/a|b", "/a{b", "/a}b", "/a{}b", "/a{s1}b", "{s1}", "{s2}:raw", "/a\nb",
    "/a\r\nb", "/a\x00b", "/a b", "/a%b", "c:/a/b", "pc:/a/b", "x:malformed", "_:start",
    "<!channel>", "<!here|here>", "<@U123>", "<#C123>", "<https://evil.example|click>",
    "&lt;!channel&gt;", "&", "*bold* _it_ `code`", "a" * 200, "<" * 200, "é" * 200,
]  # fmt: skip
GHOSTS = ["<!everyone>", "<@W999>", "gone:{s0}"]  # firing before, no traffic now
SLACK_CONTROL = re.compile(r"<[!@#]|<(?:https?|mailto):")


@pytest.fixture
def db15(settings: Settings, redis_url: str) -> Iterator[tuple[Settings, redis.Redis]]:
    """Settings on database 15 of the test server, so every key created there can be seen."""
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/15", parts.query, ""))
    client = redis.Redis.from_url(url)
    try:
        yield settings.with_overrides(redis_url=url, broker_url=url), client
    finally:
        keys = list(client.scan_iter(match=settings.key_prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()


def _key_problems(keys: set[bytes], prefix: str) -> list[str]:
    """Keys outside the prefix, of an unknown shape, or off the slot of their hash tag."""
    p = re.escape(prefix).encode()
    shapes = [
        re.compile(
            p + rb"\{(s\d+)\}:(raw|leases|roll|stats|totals|m:\d+|(batch|push):[0-9a-f]{32})\Z"
        ),
        re.compile(p + rb"\{(meta)\}:(endpoints|reasons|heartbeat:(worker|beat))\Z"),
    ]
    problems = []
    for key in sorted(keys):
        m = next((m for m in (shape.match(key) for shape in shapes) if m), None)
        if m is None:
            problems.append(f"unexpected key {key!r}")
        elif redis.crc.key_slot(key) != redis.crc.key_slot(b"{" + m.group(1) + b"}"):
            problems.append(f"key {key!r} is not in the slot of {{{m.group(1).decode()}}}")
    return problems


def _all_strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _all_strings(k)
            yield from _all_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _all_strings(v)


def _payload_problems(payload: dict[str, Any]) -> list[str]:
    problems = []
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    for text in [body, *_all_strings(payload)]:
        if SLACK_CONTROL.search(text):
            problems.append(f"control sequence in {text[:200]!r}")
    if len(payload["text"]) > MAX_TEXT:
        problems.append("text too long")
    blocks = payload["blocks"]
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks")
    for block in blocks:
        kind = block["type"]
        if kind == "header" and len(block["text"]["text"]) > MAX_HEADER_TEXT:
            problems.append("header too long")
        if kind == "section":
            if "text" in block and len(block["text"]["text"]) > MAX_SECTION_TEXT:
                problems.append("section too long")
            fields = block.get("fields", [])
            if len(fields) > MAX_FIELDS or any(len(f["text"]) > MAX_FIELD_TEXT for f in fields):
                problems.append("fields too many or too long")
        if kind == "context" and any(len(e["text"]) > MAX_CONTEXT_TEXT for e in block["elements"]):
            problems.append("context too long")
    return problems


def _check_notices(summary: dict[str, Any], settings: Settings, now: float) -> int:
    results = rules.evaluate(summary, settings, now, firing={f"error_rate:{g}" for g in GHOSTS})
    notices = [r.notice for r in results if r.notice is not None]
    payloads = [build_payload([n], service="<!channel>", environment="<@U1>") for n in notices]
    payloads.append(build_payload(notices, service="<!channel>", environment="<@U1>"))
    problems = [p for payload in payloads for p in _payload_problems(payload)]
    assert not problems, problems[:10]
    return sum(1 for r in results if r.state == rules.FIRING)


def test_hostile_names_are_counted_apart_kept_out_of_keys_and_escaped(
    db15: tuple[Settings, redis.Redis],
) -> None:
    settings, client = db15
    settings = settings.with_overrides(min_requests=1)
    before = set(client.scan_iter(count=1000))
    monitor = MetricsMonitor(settings=settings)
    for i, name in enumerate(HOSTILE_NAMES):
        for _ in range(i + 1):
            monitor.track_api_request(name, 3.0, 500)
            monitor.track_payment_failure(name, 1)
    assert monitor.flush(timeout=10)
    expected = {name: i + 1 for i, name in enumerate(HOSTILE_NAMES)}
    for aggregate in (False, True):
        if aggregate:
            monitor.aggregate()
        now = time.time()
        summary = monitor.get_metrics_summary(now=now)
        assert summary["dropped_events"]["malformed"] == 0
        assert {ep: s["total_requests"] for ep, s in summary["api"].items()} == expected
        assert {ep: s["error_count"] for ep, s in summary["api"].items()} == expected
        assert summary["payments"]["by_reason"] == expected
        # every endpoint fires both rules, the ghosts resolve, payments fire
        assert _check_notices(summary, settings, now) == 2 * len(HOSTILE_NAMES) + 1
    monitor.close()
    new = set(client.scan_iter(count=1000)) - before
    assert new, "no key created"
    assert not _key_problems(new, settings.key_prefix)


hostile_text = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["<", ">", "&", "!", "@", "#", "<!channel>", "<@U1>", "&lt;", ";", "|"]),
    ),
    min_size=1,
    max_size=60,
).map(lambda parts: "".join(parts)[:200])


@hsettings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    endpoints=st.lists(hostile_text, min_size=1, max_size=40, unique=True),
    reasons=st.lists(hostile_text, max_size=12, unique=True),
    queue=hostile_text,
    service=hostile_text,
    environment=hostile_text,
)
def test_notices_from_hostile_summaries_mention_no_one_and_fit_slack(
    endpoints: list[str], reasons: list[str], queue: str, service: str, environment: str
) -> None:
    settings = Settings(min_requests=1, queues=(queue,))
    api = {
        ep: {
            "total_requests": 100,
            "error_count": 50,
            "error_rate": 50.0,
            "avg_response_time": 3.0,
            "p95_response_time": 9.0,
            "at_or_below_threshold": 0,
        }
        for ep in endpoints
    }
    summary = {
        "window_seconds": 3600,
        "api": api,
        "payments": {
            "failures_last_hour": 50 * len(reasons),
            "by_reason": dict.fromkeys(reasons, 50),
            "amount_total": 10.5,
            "amount_by_reason": dict.fromkeys(reasons, 10.5),
        },
        "celery": {queue: {"length": 10**6, "growing": True, "growth_per_minute": 5.0}},
        "queue_broker": {"reachable": False, "broker": service, "error": environment},
        "pending_events": 10**9,
    }
    results = rules.evaluate(
        summary, settings, 1_700_000_000.0, firing={f"slow_response:{service}"}
    )
    notices = [r.notice for r in results if r.notice is not None]
    payloads = [build_payload([n], service=service, environment=environment) for n in notices]
    payloads.append(build_payload(notices, service=service, environment=environment))
    problems = [p for payload in payloads for p in _payload_problems(payload)]
    assert not problems, problems[:10]


def _store_footprint(client: redis.Redis, prefix: str) -> tuple[int, int, int]:
    """(keys, hash fields + set members + list items, bytes) of the prefix's keys, leaving
    out the per-flush push de-duplication keys (one per flush, expiring after an hour)."""
    keys = [k for k in client.scan_iter(match=prefix + "*", count=1000) if b"}:push:" not in k]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.memory_usage(key, samples=0)
    got = pipe.execute()
    size_pipe = client.pipeline(transaction=False)
    for key, kind in zip(keys, got[0::2], strict=True):
        {b"hash": size_pipe.hlen, b"set": size_pipe.scard, b"list": size_pipe.llen}.get(
            kind, size_pipe.strlen
        )(key)
    items = sum(int(n) for n in size_pipe.execute())
    return len(keys), items, sum(int(m or 0) for m in got[1::2])


def _distinct_endpoints(
    settings: Settings, n: int, at: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``n`` endpoints tracked, stamped, aggregated and read at ``at``: whatever the clock
    does meanwhile, every bucket written is the minute of ``at``."""
    monitor = MetricsMonitor(settings=settings)
    for i in range(n):
        monitor.track_api_request(f"/e/{i}/", 0.1, 200, timestamp=at)
    assert monitor.flush(timeout=30)
    pending = monitor.get_metrics_summary(now=at)
    monitor.aggregate(now=at)
    aggregated = monitor.get_metrics_summary(now=at)
    monitor.close()
    return pending, aggregated


def test_100k_distinct_endpoints_stay_under_the_cap(
    rclient: redis.Redis, settings: Settings
) -> None:
    cap = 500
    footprints = {}
    at = (time.time() // 60 - 1) * 60 + 30  # the middle of the minute before this one
    for n in (1_000, 100_000):
        s = settings.with_overrides(
            key_prefix=f"{settings.key_prefix}{n}:", max_endpoints=cap, buffer_max=200_000
        )
        pending, aggregated = _distinct_endpoints(s, n, at)
        for summary in (pending, aggregated):
            api = summary["api"]
            assert len(api) <= cap + 1
            assert "__other__" in api
            assert sum(v["total_requests"] for v in api.values()) == n
            assert summary["dropped_events"]["malformed"] == 0
        assert aggregated["endpoints_folded"] == n - cap
        assert aggregated["api"]["__other__"]["total_requests"] == n - cap
        assert aggregated["pending_events"] == 0
        footprints[n] = _store_footprint(rclient, s.key_prefix)
    keys_1k, items_1k, bytes_1k = footprints[1_000]
    keys_100k, items_100k, bytes_100k = footprints[100_000]
    assert keys_100k <= keys_1k
    # which shards hold the admitted names depends on the order of aggregation: each shard
    # holds at most 6 more fields (__other__'s five and x:folded) in its bucket and its roll
    assert items_100k <= items_1k + 2 * 6 * settings.shards
    assert bytes_100k <= 1.5 * bytes_1k + 16_384


def test_distinct_reasons_stay_under_the_cap_before_and_after_aggregation(
    settings: Settings,
) -> None:
    cap, n = 100, 5_000
    monitor = MetricsMonitor(settings=settings.with_overrides(max_reasons=cap))
    for i in range(n):
        monitor.track_payment_failure(f"reason {i}", 1)
    assert monitor.flush(timeout=30)
    pending = monitor.get_metrics_summary()
    monitor.aggregate()
    aggregated = monitor.get_metrics_summary()
    monitor.close()
    for summary in (aggregated, pending):
        payments = summary["payments"]
        assert payments["failures_last_hour"] == n
        assert len(payments["by_reason"]) <= cap + 1
        assert payments["by_reason"]["__other__"] == n - cap
