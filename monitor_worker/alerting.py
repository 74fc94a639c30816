"""Alerting: rules -> lifecycle and throttle (Redis) -> delivery outbox -> Slack.

Usage::

    report = check(client, settings, summary, now=time.time())  # claims what is due
    counts = deliver_due(client, settings, deadline_s=30.0)      # sends the outbox

``check`` never talks to Slack; ``deliver_due`` sends what the outbox holds, waiting (really
sleeping) for backoff, Retry-After and the shared pacing slot until ``deadline_s``. With no
``settings.slack_webhook_url`` a message is written to the log and to ``out`` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import redis
import requests

from . import rules, slack, throttle
from .config import Settings, redact_webhook
from .errors import SlackDeliveryError
from .throttle import Entry, add_silence, list_silences, parse_duration, remove_silence

__all__ = [
    "add_silence",
    "check",
    "deliver_due",
    "firing_alerts",
    "list_silences",
    "outbox_size",
    "parse_duration",
    "remove_silence",
]

log = logging.getLogger("monitor_worker.alerts")

REPORT_KINDS = ("fired", "resolved", "throttled", "silenced", "errors")
BACKOFF_S = 2.0  # first retry; doubles each attempt
MAX_BACKOFF_S = 300.0
PACE_S = 1.0  # Slack takes about one message per second per webhook
LEASE_MARGIN_S = 15.0


def check(
    client: redis.Redis, settings: Settings, summary: Mapping[str, Any], now: float
) -> dict[str, list[dict[str, Any]]]:
    """Evaluate the rules on ``summary`` and move each alert through its lifecycle.

    "fired": claimed for delivery now (new or reminder); "throttled": firing but held;
    "silenced": firing but silenced; "resolved": ended now; "errors": Redis refused.
    """
    firing = throttle.firing_keys(client, settings)
    silences = list_silences(client, settings, now)
    report: dict[str, list[dict[str, Any]]] = {kind: [] for kind in REPORT_KINDS}
    batch = throttle.Batch(client)
    ops: list[tuple[str, rules.RuleResult, dict[str, Any] | None]] = []
    # A window missing part of a large backlog (pending_unread) may undercount: alerts
    # keep firing on it but never resolve on it.
    partial = bool(summary.get("pending_unread"))
    for result in rules.evaluate(summary, settings, now, firing=firing):
        silence = throttle.silence_for(silences, result.key)
        unsure = result.notice is None or (partial and result.state != rules.FIRING)
        if unsure:
            if result.key in firing:  # insufficient data: keep the state alive, change nothing
                batch.run(throttle.touch, settings, result.key)
                ops.append(("touch", result, silence))
        elif result.state == rules.FIRING:
            batch.run(
                throttle.claim, settings, result.key, result.notice,
                value=result.value, now=now, silenced=silence is not None,
            )  # fmt: skip
            ops.append(("claim", result, silence))
        elif result.key in firing:
            notify = settings.send_resolved and silence is None
            batch.run(throttle.resolve, settings, result.key, result.notice, now=now, notify=notify)
            ops.append(("resolve", result, silence))
    replies = batch.replies()
    for (op, result, silence), reply in zip(ops, replies, strict=True):
        if isinstance(reply, redis.RedisError):
            log.error("alert %s: Redis refused the update: %s", result.key, reply)
            report["errors"].append({"key": result.key, "error": str(reply)})
        elif op == "claim":
            _claimed(report, result, reply, silence, reminder=result.key in firing)
        elif op == "resolve":
            _resolved(report, result, throttle.as_text(reply), silence)
    return report


def _claimed(
    report: dict[str, list[dict[str, Any]]],
    result: rules.RuleResult,
    reply: Sequence[bytes],
    silence: Mapping[str, Any] | None,
    *,
    reminder: bool,
) -> None:
    status, detail = throttle.as_text(reply[0]), throttle.as_text(reply[1])
    title = result.notice.title if result.notice else ""
    entry = {
        "key": result.key,
        "title": title,
        "value": result.value,
        "threshold": result.threshold,
    }
    if status == "claimed":
        log.info("alert %s firing: %s", result.key, title)
        report["fired"].append({**entry, "episode": int(detail), "reminder": reminder})
    elif status == "silenced" and silence is not None:
        log.info("alert %s firing but silenced by %r", result.key, silence["pattern"])
        report["silenced"].append({**entry, **{k: silence[k] for k in ("pattern", "reason")}})
    elif status == "throttled":
        report["throttled"].append({**entry, "until": float(detail), "why": "throttle"})
    else:
        report["throttled"].append({**entry, "until": None, "why": "awaiting delivery"})


def _resolved(
    report: dict[str, list[dict[str, Any]]],
    result: rules.RuleResult,
    status: str,
    silence: Mapping[str, Any] | None,
) -> None:
    if status == "not_firing":  # another process resolved it first
        return
    note = result.notice.note if result.notice else ""
    log.info("alert %s resolved%s (%s)", result.key, f": {note}" if note else "", status)
    report["resolved"].append(
        {
            "key": result.key,
            "title": result.notice.title if result.notice else "",
            "value": result.value,
            "note": note,
            "notify": status == "queued",
            "silenced": silence["pattern"] if silence else None,
        }
    )


def deliver_due(
    client: redis.Redis,
    settings: Settings,
    now: float | None = None,
    *,
    deadline_s: float = 30.0,
    session: requests.Session | None = None,
    out: TextIO | None = None,
    backoff_s: float = BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
    pace_s: float = PACE_S,
) -> dict[str, int]:
    """Send what the outbox holds; return counts ``{"sent", "retry", "dropped", "pending"}``.

    More than ``settings.alert_group_max`` entries due at once go out as one digest.
    """
    run = _Delivery(client, settings, now, deadline_s, session=session, out=out)
    run.backoff_s, run.max_backoff_s, run.pace_s = backoff_s, max_backoff_s, pace_s
    return run.run()


class _Delivery:
    """One deliver_due call: its clock (``now`` moved on by real time) and its counts."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        now: float | None,
        deadline_s: float,
        *,
        session: requests.Session | None,
        out: TextIO | None,
    ) -> None:
        self.client, self.settings, self.session, self.out = client, settings, session, out
        self.started = time.monotonic()
        self.base = time.time() if now is None else now
        self.deadline_s = deadline_s
        self.backoff_s, self.max_backoff_s, self.pace_s = BACKOFF_S, MAX_BACKOFF_S, PACE_S
        self.counts = {"sent": 0, "retry": 0, "dropped": 0, "pending": 0}

    def clock(self) -> float:
        return self.base + (time.monotonic() - self.started)

    def left_s(self) -> float:
        return self.deadline_s - (time.monotonic() - self.started)

    def run(self) -> dict[str, int]:
        while True:
            t = self.clock()
            lease_until = t + max(self.left_s(), 0.0) + 2 * self.settings.slack_timeout_s
            entries = throttle.lease_due(
                self.client, self.settings, t, lease_until=lease_until + LEASE_MARGIN_S
            )
            if entries and not self.handle(entries):
                break  # the pacing slot is not free before the deadline
            if self.left_s() <= 0:
                break
            if not entries:
                due = throttle.next_due(self.client, self.settings)
                if due is None or due - self.clock() > self.left_s():
                    break
                time.sleep(max(due - self.clock(), 0.01))
        self.counts["pending"] = throttle.outbox_size(self.client, self.settings)
        return self.counts

    def handle(self, entries: list[Entry]) -> bool:
        """Drop what must not go out, send the rest; False when out of time for pacing."""
        t = self.clock()
        silences = list_silences(self.client, self.settings, t)
        resolved = [e for e in entries if e.kind == "resolved"]
        states = throttle.states(self.client, self.settings, [e.key for e in resolved])
        notified = {
            e.key: s.get("delivered_episode") for e, s in zip(resolved, states, strict=True)
        }
        sendable = []
        for e in entries:
            age_s = t - e.created
            silence = throttle.silence_for(silences, e.key)
            if age_s > self.settings.delivery_max_age_s:
                why = f"not delivered in {age_s:.0f} s ({e.attempts} attempts)"
                log.warning("alert %s (%s) dropped: %s", e.key, e.kind, why)
            elif silence is not None:
                why = f"silenced by {silence['pattern']!r}"
                log.info("alert %s (%s) not sent: %s", e.key, e.kind, why)
            elif e.kind == "resolved" and notified.get(e.key) != str(e.episode):
                why = "its firing message was never delivered"
                log.info("alert %s resolved; %s", e.key, why)
            else:
                sendable.append(e)
                continue
            self.finish([e], delivered=False, why=why)
            self.counts["dropped"] += 1
        if len(sendable) > self.settings.alert_group_max:
            groups = [sendable]
        else:
            groups = [[e] for e in sendable]
        for i, group in enumerate(groups):
            if not self.send(group):  # out of time waiting for the pacing slot
                for rest in groups[i:]:
                    self.put_back(rest, attempt=False, delay_s=0.0)
                return False
        return True

    def send(self, group: list[Entry]) -> bool:
        notices = [_notice(e) for e in group]
        s = self.settings
        payload = slack.build_payload(notices, service=s.service_name, environment=s.environment)
        if not s.slack_webhook_url:
            text = slack.render_console(payload)
            log.warning("%s", text)
            if self.out is not None:
                self.out.write(text + "\n")
            self.finish(group, delivered=True)
            return True
        while (wait_s := throttle.take_pace_slot(self.client, s, pace_s=self.pace_s)) > 0:
            if wait_s > self.left_s():
                return False
            time.sleep(wait_s)
        try:
            slack.deliver(
                payload, s.slack_webhook_url, timeout_s=s.slack_timeout_s, session=self.session
            )
        except SlackDeliveryError as exc:
            self.failed(group, exc)
            return True
        log.info("sent %s to Slack", _names(group))
        self.finish(group, delivered=True)
        return True

    def failed(self, group: list[Entry], exc: SlackDeliveryError) -> None:
        url = self.settings.slack_webhook_url
        reason = str(exc).replace(url, redact_webhook(url)) if url else str(exc)
        if exc.permanent:
            log.error("Slack refused %s; dropped, not retried: %s", _names(group), reason)
            hold = self.clock() + self.settings.alert_throttle_s
            self.finish(group, delivered=False, hold_until=hold, why=reason)
            self.counts["dropped"] += len(group)
            return
        if exc.retry_after_s is not None:
            throttle.hold_pace(self.client, self.settings, seconds=exc.retry_after_s)
        attempts = max(e.attempts for e in group) + 1
        delay_s = exc.retry_after_s
        if delay_s is None:
            delay_s = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
        log.warning(
            "Slack delivery of %s failed (attempt %d), retrying in %.1f s: %s",
            _names(group),
            attempts,
            delay_s,
            reason,
        )
        self.put_back(group, attempt=True, delay_s=delay_s, why=reason)
        self.counts["retry"] += len(group)

    def put_back(self, group: list[Entry], *, attempt: bool, delay_s: float, why: str = "") -> None:
        """Make ``group`` due again; an ``attempt`` that failed is recorded as ``retrying``."""
        batch = throttle.Batch(self.client)
        now = self.clock()
        for e in group:
            again = throttle.with_attempt(e) if attempt else e
            batch.run(throttle.reschedule, self.settings, again, due=now + delay_s)
            if attempt:
                batch.run(
                    throttle.record_delivery, self.settings, again, "retrying", now=now, error=why
                )
        _raise_first(batch.replies())

    def finish(
        self,
        group: list[Entry],
        *,
        delivered: bool,
        hold_until: float | None = None,
        why: str = "",
    ) -> None:
        """Take ``group`` out of the outbox, recorded as ``sent`` or ``dropped`` (``why``)."""
        batch = throttle.Batch(self.client)
        now = self.clock()
        outcome = "sent" if delivered else "dropped"
        for e in group:
            batch.run(
                throttle.finish,
                self.settings,
                e,
                now=now,
                delivered=delivered,
                hold_until=hold_until,
            )
            batch.run(throttle.record_delivery, self.settings, e, outcome, now=now, error=why)
        _raise_first(batch.replies())
        if delivered:
            self.counts["sent"] += len(group)


def _raise_first(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, redis.RedisError):
            raise reply


def _notice(entry: Entry) -> slack.Notice:
    """The stored notice; a reminder also says since when it has been firing."""
    notice = entry.notice
    if entry.kind != "firing" or entry.created - entry.since < 1:
        return notice
    since = datetime.fromtimestamp(entry.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    still = f"Still firing since {since} ({_ago(entry.created - entry.since)})"
    note = f"{notice.note}\n{still}" if notice.note else still
    return slack.Notice(notice.key, notice.status, notice.title, notice.details, note)


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _names(group: list[Entry]) -> str:
    shown = ", ".join(f"{e.kind} {e.key}" for e in group[:5])
    return shown + (f" and {len(group) - 5} more" if len(group) > 5 else "")


def firing_alerts(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """The alerts firing now: key, since, last_sent, last_value, delivered, silenced,
    throttled_until (no reminder before then; None when none was sent)."""
    firing = throttle.firing_keys(client, settings)
    keys = sorted(firing)
    silences = list_silences(client, settings)
    shown = []
    for key, state in zip(keys, throttle.states(client, settings, keys), strict=True):
        if state.get("firing") != "1":
            continue
        silence = throttle.silence_for(silences, key)
        shown.append(
            {
                "key": key,
                "since": float(state.get("since") or firing[key]),
                "last_sent": _float_or_none(state.get("sent_at")),
                "last_value": _float_or_none(state.get("last_value")),
                "delivered": state.get("delivered_episode") == state.get("episode"),
                "silenced": silence["pattern"] if silence else None,
                "throttled_until": _float_or_none(state.get("hold_until")),
            }
        )
    return shown


def outbox_size(client: redis.Redis, settings: Settings) -> int:
    """How many messages wait in the delivery outbox."""
    return throttle.outbox_size(client, settings)


def _float_or_none(text: str | None) -> float | None:
    return float(text) if text else None
