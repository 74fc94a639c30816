"""Alert state in a real Redis: claims, leases, resolves, silences, pacing, TTLs."""

from __future__ import annotations

import pytest
import redis

from monitor_worker import throttle
from monitor_worker.config import Settings
from monitor_worker.slack import Notice

T0 = 1_700_000_000.0
KEY = "error_rate:/api/x/"


def notice(status: str = "firing") -> Notice:
    return Notice(KEY, status, "Error rate 9 % > 5 %", (("Requests", "100"),))


def status(reply: list[bytes]) -> str:
    return throttle.as_text(reply[0])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("45", 45), (" 1.5h ", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert throttle.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-5m", "3w", "m", "1 day", "1e3s"])
def test_parse_duration_rejects_naming_the_argument(text: str) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        throttle.parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("error_rate:/api/admin/*", "error_rate:/api/admin/users/", True),
        ("error_rate:/api/admin/*", "error_rate:/api/other/", False),
        ("payment_failures", "payment_failures", True),
        ("payment_failures", "payment_failures_x", False),
        ("*", "anything", True),
        ("celery_queue:celery", "celery_queue:celery_2", False),
    ],
)
def test_silence_matches(pattern: str, key: str, matches: bool) -> None:
    assert throttle.silence_matches(pattern, key) is matches


def test_claim_once_then_hold_until_throttle_ends(rclient: redis.Redis, settings: Settings) -> None:
    assert status(throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0)) == "claimed"
    assert (
        status(throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0 + 1)) == "pending"
    )
    [entry] = throttle.lease_due(rclient, settings, T0 + 2, lease_until=T0 + 60)
    assert entry.key == KEY and entry.kind == "firing" and entry.episode == 1
    assert throttle.finish(rclient, settings, entry, now=T0 + 3, delivered=True) == 1
    assert throttle.outbox_size(rclient, settings) == 0
    reply = throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0 + 602)
    assert status(reply) == "throttled" and float(reply[1]) == T0 + 603
    assert (
        status(throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0 + 603)) == "claimed"
    )


def test_lease_expires_so_a_crashed_sender_loses_nothing(
    rclient: redis.Redis, settings: Settings
) -> None:
    throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0)
    [leased] = throttle.lease_due(rclient, settings, T0, lease_until=T0 + 60)
    # the leasing process dies here
    assert throttle.lease_due(rclient, settings, T0 + 59, lease_until=T0 + 120) == []
    [again] = throttle.lease_due(rclient, settings, T0 + 60, lease_until=T0 + 120)
    assert again.cid == leased.cid
    assert throttle.finish(rclient, settings, again, now=T0 + 61, delivered=True) == 1
    assert throttle.finish(rclient, settings, leased, now=T0 + 62, delivered=True) == 0


def test_reschedule_only_touches_the_entry_it_holds(
    rclient: redis.Redis, settings: Settings
) -> None:
    throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0)
    [entry] = throttle.lease_due(rclient, settings, T0, lease_until=T0 + 60)
    stale = throttle.with_attempt(entry)
    assert throttle.reschedule(rclient, settings, stale, due=T0 + 5) == 1
    assert throttle.lease_due(rclient, settings, T0 + 4, lease_until=T0 + 60) == []
    [retried] = throttle.lease_due(rclient, settings, T0 + 5, lease_until=T0 + 60)
    assert retried.attempts == 1
    other = throttle.new_entry(KEY, "firing", notice(), T0)
    assert throttle.reschedule(rclient, settings, other, due=T0) == 0
    assert throttle.finish(rclient, settings, other, now=T0, delivered=True) == 0


def test_resolve_is_owed_only_for_a_notified_episode(
    rclient: redis.Redis, settings: Settings
) -> None:
    ok = notice("resolved")
    # never claimed (silenced): no resolved message
    throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0, silenced=True)
    assert throttle.as_text(
        throttle.resolve(rclient, settings, KEY, ok, now=T0 + 1, notify=True)
    ) == ("undelivered")
    assert throttle.outbox_size(rclient, settings) == 0
    # claimed and delivered: one resolved message, and not twice
    throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0 + 2)
    [entry] = throttle.lease_due(rclient, settings, T0 + 2, lease_until=T0 + 60)
    throttle.finish(rclient, settings, entry, now=T0 + 3, delivered=True)
    assert throttle.as_text(
        throttle.resolve(rclient, settings, KEY, ok, now=T0 + 4, notify=True)
    ) == ("queued")
    again = throttle.resolve(rclient, settings, KEY, ok, now=T0 + 5, notify=True)
    assert throttle.as_text(again) == "not_firing"
    [resolved] = throttle.lease_due(rclient, settings, T0 + 5, lease_until=T0 + 60)
    assert resolved.kind == "resolved" and resolved.episode == 2


def test_resolved_entry_waits_for_its_firing_entry(
    rclient: redis.Redis, settings: Settings
) -> None:
    throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0)
    throttle.resolve(rclient, settings, KEY, notice("resolved"), now=T0 + 1, notify=True)
    [firing] = throttle.lease_due(rclient, settings, T0 + 2, lease_until=T0 + 60)
    assert firing.kind == "firing"
    assert throttle.lease_due(rclient, settings, T0 + 3, lease_until=T0 + 60) == []
    throttle.finish(rclient, settings, firing, now=T0 + 4, delivered=True)
    [resolved] = throttle.lease_due(rclient, settings, T0 + 4, lease_until=T0 + 60)
    assert resolved.kind == "resolved"


def test_silences_add_list_expire_remove(rclient: redis.Redis, settings: Settings) -> None:
    added = throttle.add_silence(
        rclient, settings, "error_rate:/api/admin/*", 60, "deploy", T0, created_by="alice"
    )
    assert added == {
        "pattern": "error_rate:/api/admin/*",
        "reason": "deploy",
        "until": T0 + 60,
        "created": T0,
        "created_by": "alice",
    }
    throttle.add_silence(rclient, settings, "payment_failures", 3600, "", T0)
    listed = throttle.list_silences(rclient, settings, T0 + 30)
    assert [s["pattern"] for s in listed] == ["error_rate:/api/admin/*", "payment_failures"]
    assert throttle.silence_for(listed, "error_rate:/api/admin/x/") == listed[0]
    assert throttle.silence_for(listed, "error_rate:/api/x/") is None
    assert [s["pattern"] for s in throttle.list_silences(rclient, settings, T0 + 61)] == [
        "payment_failures"
    ]
    ttl = rclient.ttl(throttle.AlertKeys.of(settings).silences)
    assert 3500 < ttl <= 3600
    assert throttle.remove_silence(rclient, settings, "payment_failures") is True
    assert throttle.remove_silence(rclient, settings, "payment_failures") is False
    assert throttle.list_silences(rclient, settings, T0) == []


@pytest.mark.parametrize(
    ("pattern", "duration_s"), [("", 60), ("a*b", 60), ("*x", 60), ("ok", 0), ("ok", -1)]
)
def test_add_silence_rejects_bad_input(
    rclient: redis.Redis, settings: Settings, pattern: str, duration_s: float
) -> None:
    with pytest.raises(ValueError, match=r"pattern|duration_s"):
        throttle.add_silence(rclient, settings, pattern, duration_s, "", T0)


def test_pace_slot_is_shared(rclient: redis.Redis, settings: Settings, redis_url: str) -> None:
    other = redis.Redis.from_url(redis_url)
    try:
        assert throttle.take_pace_slot(rclient, settings, pace_s=1.0) == 0.0
        wait_s = throttle.take_pace_slot(other, settings, pace_s=1.0)
        assert 0.5 < wait_s <= 1.0
        throttle.hold_pace(other, settings, seconds=5)
        assert 4.0 < throttle.take_pace_slot(rclient, settings, pace_s=1.0) <= 5.0
    finally:
        other.close()


def test_every_key_is_tagged_and_expires(rclient: redis.Redis, settings: Settings) -> None:
    throttle.claim(rclient, settings, KEY, notice(), value=9, now=T0)
    throttle.add_silence(rclient, settings, "x*", 60, "", T0)
    throttle.take_pace_slot(rclient, settings, pace_s=1.0)
    keys = list(rclient.scan_iter(match=settings.key_prefix + "*"))
    assert len(keys) == 6  # state, firing, entries, outbox, silences, pace
    for key in keys:
        assert b"{alerts}" in key
        assert rclient.pttl(key) > 0, key
