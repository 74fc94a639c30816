"""Slack incoming-webhook messages: a Block Kit payload and one delivery attempt.

Usage::

    notice = Notice("error_rate:/api/x/", "firing", "Error rate 12.5 % > 5.0 % on /api/x/")
    payload = build_payload([notice], service="shop", environment="production")
    try:
        deliver(payload, settings.slack_webhook_url, timeout_s=settings.slack_timeout_s)
    except SlackDeliveryError as exc:
        ...  # exc.permanent and exc.retry_after_s tell the caller whether and when to retry

Every interpolated string is escaped for mrkdwn (``& < >``) before it is cut to Slack's
limits, so an endpoint such as ``<!channel>`` arrives as text, and a cut never splits an
entity. The webhook URL is a secret: errors and log records show ``redact_webhook(url)`` only.
urllib3 itself logs request paths at DEBUG level; keep ``urllib3`` at INFO or above in production.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from .config import redact_webhook
from .errors import SlackDeliveryError

log = logging.getLogger("monitor_worker.slack")

# Slack's documented limits for messages and Block Kit
MAX_BLOCKS = 50
MAX_TEXT = 40_000
MAX_SECTION_TEXT = 3_000
MAX_HEADER_TEXT = 150
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_CONTEXT_TEXT = 2_000
ELLIPSIS = "…"

_LINE_MAX = 300  # one notice in a digest
_KEY_MAX = 120
_ERROR_TEXT_MAX = 200
_STATUS = {
    "firing": (":rotating_light:", "FIRING"),
    "resolved": (":white_check_mark:", "RESOLVED"),
}


@dataclass(frozen=True)
class Notice:
    """One alert to announce; every string is plain text (escaping happens here)."""

    key: str
    status: str
    title: str
    details: tuple[tuple[str, str], ...] = ()
    note: str = ""


def escape_mrkdwn(text: str) -> str:
    """Escape Slack's control characters so ``text`` can never become a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _cut(escaped: str, limit: int) -> str:
    """Cut already escaped text to ``limit`` characters with an ellipsis, keeping entities whole."""
    if len(escaped) <= limit:
        return escaped
    head = escaped[: limit - len(ELLIPSIS)]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + ELLIPSIS


def _esc(text: str, limit: int) -> str:
    return _cut(escape_mrkdwn(text), limit)


def _status(status: str) -> tuple[str, str]:
    return _STATUS.get(status, (":warning:", status.upper() or "UNKNOWN"))


def _scope(service: str, environment: str) -> str:
    """The escaped ``[service/environment]`` tag with a trailing space, or ``""``."""
    shown = "/".join(part for part in (service, environment) if part)
    return f"[{escape_mrkdwn(shown)}] " if shown else ""


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _cut(text, MAX_HEADER_TEXT), "emoji": True},
    }


def _mrkdwn(text: str, limit: int) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text, MAX_SECTION_TEXT)}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text, MAX_CONTEXT_TEXT)]}


def build_payload(
    notices: Sequence[Notice], *, service: str = "", environment: str = ""
) -> dict[str, Any]:
    """One notice -> one message; several -> one digest that fits Slack's limits.

    Usage: ``build_payload([Notice("error_rate:/x/", "resolved", "Error rate back to 0.5 %")])``
    """
    if not notices:
        raise ValueError("build_payload needs at least one notice")
    scope = _scope(service, environment)
    if len(notices) == 1:
        return _single(notices[0], scope)
    return _digest(notices, scope)


def _single(notice: Notice, scope: str) -> dict[str, Any]:
    emoji, label = _status(notice.status)
    title = _esc(notice.title, 1_000)
    note = _esc(notice.note, 1_900)
    key = _esc(notice.key, 1_000)
    text = f"{emoji} {label} {scope}{title} ({key})" + (f"\n{note}" if note else "")
    blocks: list[dict[str, Any]] = [
        _header(f"{emoji} {label} {scope}{title}"),
        _section(f"*{title}*" + (f"\n{note}" if note else "")),
    ]
    fields = [f"*{_esc(name, 200)}*\n{_esc(value, 1_700)}" for name, value in notice.details]
    chunks = [fields[i : i + MAX_FIELDS] for i in range(0, len(fields), MAX_FIELDS)]
    room = MAX_BLOCKS - len(blocks) - 1  # the closing context block
    if len(chunks) > room:
        chunks = chunks[: room - 1]
        hidden = len(fields) - MAX_FIELDS * len(chunks)
        chunks.append([f"{ELLIPSIS} and {hidden} more details"])
    for chunk in chunks:
        blocks.append({"type": "section", "fields": [_mrkdwn(f, MAX_FIELD_TEXT) for f in chunk]})
    blocks.append(_context(f"Alert key: {key}"))
    return {"text": _cut(text, MAX_TEXT), "blocks": blocks}


def _line(notice: Notice) -> str:
    emoji, label = _status(notice.status)
    line = f"{emoji} {label} *{_esc(notice.key, _KEY_MAX)}*: {escape_mrkdwn(notice.title)}"
    if notice.note:
        line += f" ({escape_mrkdwn(notice.note)})"
    return _cut(line, _LINE_MAX)


def _digest(notices: Sequence[Notice], scope: str) -> dict[str, Any]:
    """Summary header, one line per notice while the limits allow, then "… and N more".

    The same lines make up the text fallback, so its 40,000 characters bound the listing too;
    a status other than "resolved" counts as firing.
    """
    firing = sum(1 for n in notices if n.status != "resolved")
    resolved = len(notices) - firing
    emoji = _STATUS["firing" if firing else "resolved"][0]
    summary = f"{emoji} {scope}{len(notices)} alerts: {firing} firing, {resolved} resolved"
    more_room = len(f"\n{ELLIPSIS} and {len(notices)} more")
    budget = MAX_TEXT - len(summary) - more_room
    sections: list[list[str]] = []
    section_len = 0
    listed = 0
    for notice in notices:
        line = _line(notice)
        if budget < len(line) + 1:
            break
        if sections and section_len + 1 + len(line) <= MAX_SECTION_TEXT:
            sections[-1].append(line)
            section_len += 1 + len(line)
        elif len(sections) < MAX_BLOCKS - 2:  # header and the closing "more" block
            sections.append([line])
            section_len = len(line)
        else:
            break
        budget -= len(line) + 1
        listed += 1
    lines = [line for section in sections for line in section]
    blocks = [_header(summary)] + [_section("\n".join(section)) for section in sections]
    hidden = len(notices) - listed
    if hidden:
        more = f"{ELLIPSIS} and {hidden} more"
        lines.append(more)
        blocks.append(_context(more))
    text = "\n".join([summary, *lines])
    return {"text": _cut(text, MAX_TEXT), "blocks": blocks}


def render_console(payload: Mapping[str, Any]) -> str:
    """A readable plain-text form of a payload, for logs when no webhook is configured."""
    out: list[str] = []
    blocks = payload.get("blocks")
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, Mapping):
            continue
        for text in _texts([block.get("text")]):
            out.append(text)
        for text in _texts(block.get("fields") or ()):
            name, _, value = text.partition("\n")
            if not value:
                out.append(f"  {name}")
                continue
            head = f"  {name.strip('*')}: "
            # continuation lines (a list such as "Top reasons") line up under the first
            out.append(head + value.replace("\n", "\n" + " " * len(head)))
        for text in _texts(block.get("elements") or ()):
            out.append(f"  ({text})")
    if not out and isinstance(payload.get("text"), str):
        out.append(payload["text"])
    return _unescape("\n".join(out))


def _texts(objects: Iterable[Any]) -> list[str]:
    return [
        obj["text"]
        for obj in objects
        if isinstance(obj, Mapping) and isinstance(obj.get("text"), str) and obj["text"]
    ]


_BAD_URL = (
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


def deliver(
    payload: Mapping[str, Any],
    webhook_url: str,
    *,
    timeout_s: float = 10.0,
    session: requests.Session | None = None,
) -> None:
    """POST ``payload`` to the webhook once; raise SlackDeliveryError when Slack did not take it.

    ``permanent`` is False for 429 (with ``retry_after_s``), 5xx, connection errors and
    timeouts, True for other statuses and a malformed URL. No message mentions the URL.
    """
    where = f"Slack webhook {redact_webhook(webhook_url)}"
    if not webhook_url:
        raise SlackDeliveryError(f"{where}: no URL configured", permanent=True)
    body = json.dumps(dict(payload), ensure_ascii=False, allow_nan=False).encode("utf-8")
    failure: SlackDeliveryError | None = None
    response: requests.Response | None = None
    # Exceptions from requests carry the URL: build our own outside the except clauses so
    # neither __cause__ nor __context__ refers to them.
    try:
        response = (session or requests).post(
            webhook_url,
            data=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=(min(5.0, timeout_s), timeout_s),
            allow_redirects=False,
        )
    except requests.Timeout:
        failure = SlackDeliveryError(f"{where}: timed out after {timeout_s:g} s", permanent=False)
    except _BAD_URL as exc:
        failure = SlackDeliveryError(f"{where}: bad URL ({type(exc).__name__})", permanent=True)
    except requests.RequestException as exc:
        failure = SlackDeliveryError(f"{where}: {_os_reason(exc)}", permanent=False)
    if response is not None:
        failure = _judge(response, where, webhook_url)
    if failure is None:
        log.debug("%s accepted the message", where)
        return
    log.log(logging.WARNING if failure.permanent else logging.INFO, "%s", failure)
    raise failure from None


def _judge(response: requests.Response, where: str, webhook_url: str) -> SlackDeliveryError | None:
    status = response.status_code
    if 200 <= status < 300:
        return None
    said = response.text.strip().replace(webhook_url, "***")
    said = " ".join(said.split())[:_ERROR_TEXT_MAX] or response.reason or ""
    message = f"{where}: HTTP {status} {said}".rstrip()
    if status == 429:
        retry_after_s = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
        return SlackDeliveryError(message, permanent=False, retry_after_s=retry_after_s)
    return SlackDeliveryError(message, permanent=not status >= 500)


def parse_retry_after(value: str | None, *, now: float, default_s: float = 1.0) -> float:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date) at time ``now``."""
    if not value or not value.strip():
        return default_s
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return default_s
        if when.tzinfo is None:
            return default_s
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return default_s
    return max(0.0, seconds)


def _os_reason(exc: BaseException) -> str:
    """The operating system's words for a connection failure (never the URL), else a type name."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.strerror, str):
            return f"connection failed ({current.strerror})"
        reason = getattr(current, "reason", None)
        nxt = reason if isinstance(reason, BaseException) else None
        current = nxt or current.__cause__ or current.__context__
    return f"request failed ({type(exc).__name__})"
