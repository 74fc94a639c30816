"""Slack payloads (escaping, limits, digests) and delivery against a local HTTP server."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from monitor_worker.errors import SlackDeliveryError
from monitor_worker.slack import (
    MAX_BLOCKS,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER_TEXT,
    MAX_SECTION_TEXT,
    MAX_TEXT,
    Notice,
    build_payload,
    deliver,
    escape_mrkdwn,
    parse_retry_after,
    render_console,
)
from tests.conftest import free_port

SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxSECRETtoken"
HOSTILE = "<!channel> <@U123> <!here|here> <http://evil.example|click> & co"
ENTITY = re.compile(r"&(amp|lt|gt);")


def strings(node: Any) -> Iterator[str]:
    """Every string (keys excluded) anywhere in a JSON-like tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def text_objects(payload: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, text) of every text object in the blocks; kind names the limit that applies."""
    for block in payload["blocks"]:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            yield "header", block["text"]["text"]
        elif block["type"] == "section":
            if "text" in block:
                yield "section", block["text"]["text"]
            assert len(block.get("fields", ())) <= MAX_FIELDS
            for field in block.get("fields", ()):
                yield "field", field["text"]
        elif block["type"] == "context":
            assert len(block["elements"]) <= 10
            for element in block["elements"]:
                yield "context", element["text"]
        else:
            pytest.fail(f"unexpected block type {block['type']}")


LIMITS = {"header": MAX_HEADER_TEXT, "section": MAX_SECTION_TEXT, "field": MAX_FIELD_TEXT}


def assert_within_limits(payload: dict[str, Any]) -> None:
    assert isinstance(payload["text"], str) and 0 < len(payload["text"]) <= MAX_TEXT
    assert 0 < len(payload["blocks"]) <= MAX_BLOCKS
    for kind, text in text_objects(payload):
        assert 0 < len(text) <= LIMITS.get(kind, MAX_FIELD_TEXT), (kind, len(text))


def assert_escaped(payload: dict[str, Any]) -> None:
    """No raw control character anywhere; every '&' starts an entity."""
    for text in strings(payload):
        assert "<" not in text and ">" not in text, text
        assert "&" not in ENTITY.sub("", text), text


# ---------------------------------------------------------------- escaping


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("", ""),
        ("/api/orders/", "/api/orders/"),
        ("a & b", "a &amp; b"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123>", "&lt;@U123&gt;"),
        ("<http://x.example|y>", "&lt;http://x.example|y&gt;"),
        ("&amp;", "&amp;amp;"),
        ("&lt;", "&amp;lt;"),
        ("<<>>", "&lt;&lt;&gt;&gt;"),
        ("*bold* _it_ `code` :smile:", "*bold* _it_ `code` :smile:"),
        ("é ✓ 日本", "é ✓ 日本"),
    ],
)
def test_escape_mrkdwn(raw: str, escaped: str) -> None:
    assert escape_mrkdwn(raw) == escaped


# ---------------------------------------------------------------- payloads


def hostile_notice(status: str = "firing") -> Notice:
    return Notice(
        key=f"error_rate:/api/{HOSTILE}/",
        status=status,
        title=f"Error rate 12.5 % > 5.0 % on /api/{HOSTILE}/",
        details=(("Endpoint <@U123>", f"/api/{HOSTILE}/"), ("Requests", "200 > 20")),
        note=f"note {HOSTILE}",
    )


def test_single_notice_escapes_every_string() -> None:
    payload = build_payload([hostile_notice()], service="<!channel>", environment="prod & co")
    assert_escaped(payload)
    assert_within_limits(payload)
    everything = json.dumps(payload)
    assert "&lt;!channel&gt;" in everything and "&lt;@U123&gt;" in everything
    assert "[&lt;!channel&gt;/prod &amp; co]" in payload["text"]


def test_digest_escapes_every_string() -> None:
    notices = [hostile_notice(), hostile_notice("resolved"), hostile_notice()]
    payload = build_payload(notices, service="<@U123>", environment="<!here>")
    assert_escaped(payload)
    assert_within_limits(payload)


def test_single_notice_shape() -> None:
    notice = Notice(
        key="error_rate:/api/x/",
        status="firing",
        title="Error rate 12.5 % > 5.0 % on /api/x/",
        details=(("Requests", "200"), ("Errors", "25")),
        note="no traffic",
    )
    payload = build_payload([notice], service="shop", environment="production")
    header = payload["blocks"][0]["text"]["text"]
    assert header.startswith(":rotating_light: FIRING [shop/production] Error rate 12.5 %")
    assert "[shop/production]" in payload["text"] and "FIRING" in payload["text"]
    assert "error_rate:/api/x/" in payload["text"] and "no traffic" in payload["text"]
    fields = [text for kind, text in text_objects(payload) if kind == "field"]
    assert fields == ["*Requests*\n200", "*Errors*\n25"]
    assert any("error_rate:/api/x/" in text for kind, text in text_objects(payload))


@pytest.mark.parametrize(
    ("service", "environment", "tag"),
    [
        ("shop", "production", "[shop/production] "),
        ("shop", "", "[shop] "),
        ("", "staging", "[staging] "),
        ("", "", ""),
    ],
)
def test_resolved_differs_and_scope_tag(service: str, environment: str, tag: str) -> None:
    notice = Notice("error_rate:/x/", "resolved", "Error rate back to 0.5 %")
    payload = build_payload([notice], service=service, environment=environment)
    header = payload["blocks"][0]["text"]["text"]
    assert header == f":white_check_mark: RESOLVED {tag}Error rate back to 0.5 %"
    assert payload["text"].startswith(f":white_check_mark: RESOLVED {tag}")
    assert "FIRING" not in json.dumps(payload)


def test_no_notice_is_an_error() -> None:
    with pytest.raises(ValueError):
        build_payload([])


def test_thousand_notices_make_one_digest_within_limits() -> None:
    notices = [
        Notice(
            f"error_rate:/api/endpoint/{i}/",
            "resolved" if i % 4 == 0 else "firing",
            f"Error rate {i % 90 + 5}.0 % > 5.0 % on /api/endpoint/{i}/",
        )
        for i in range(1000)
    ]
    payload = build_payload(notices, service="shop", environment="production")
    assert_within_limits(payload)
    assert_escaped(payload)
    blocks = payload["blocks"]
    assert blocks[0]["text"]["text"] == (
        ":rotating_light: [shop/production] 1000 alerts: 750 firing, 250 resolved"
    )
    listed = [
        line
        for block in blocks
        if block["type"] == "section"
        for line in block["text"]["text"].split("\n")
    ]
    assert all(
        line.startswith((":rotating_light: FIRING", ":white_check_mark: RESOLVED"))
        for line in listed
    )
    assert listed[0].endswith(
        "*error_rate:/api/endpoint/0/*: Error rate 5.0 % &gt; 5.0 % on /api/endpoint/0/"
    )
    match = re.fullmatch(r"… and (\d+) more", blocks[-1]["elements"][0]["text"])
    assert match is not None
    assert len(listed) + int(match.group(1)) == 1000
    assert len(listed) > 100  # the digest lists as many as fit, not a token few
    text_lines = payload["text"].split("\n")
    assert text_lines[1:-1] == listed and text_lines[-1] == match.group(0)


def test_two_notices_make_a_digest_without_more() -> None:
    payload = build_payload([Notice("a", "firing", "A"), Notice("b", "resolved", "B")])
    assert payload["blocks"][0]["text"]["text"] == ":rotating_light: 2 alerts: 1 firing, 1 resolved"
    assert "more" not in json.dumps(payload)
    assert payload["blocks"][1]["text"]["text"] == (
        ":rotating_light: FIRING *a*: A\n:white_check_mark: RESOLVED *b*: B"
    )


def test_all_resolved_digest_uses_resolved_mark() -> None:
    payload = build_payload([Notice("a", "resolved", "A"), Notice("b", "resolved", "B")])
    assert payload["blocks"][0]["text"]["text"].startswith(":white_check_mark: 2 alerts")


@pytest.mark.parametrize("pad", range(6))
@pytest.mark.parametrize("char", ["&", "<", ">"])
def test_long_endpoint_is_cut_with_ellipsis_never_inside_an_entity(pad: int, char: str) -> None:
    endpoint = "/api/" + "x" * pad + char * 20_000
    notice = Notice(
        f"error_rate:{endpoint}",
        "firing",
        f"Error rate on {endpoint}",
        details=(("Endpoint", endpoint),),
        note=endpoint,
    )
    for payload in (build_payload([notice]), build_payload([notice, notice])):
        assert_within_limits(payload)
        assert_escaped(payload)
        cut = [text for text in strings(payload) if text.endswith("…")]
        assert cut, "long values must be cut with an ellipsis"
        for text in strings(payload):
            # an entity split at the cut would leave a bare '&' (checked above) or a stray
            # 'amp;' / 'lt;' / 'gt;' right after the ellipsis' predecessor
            assert not re.search(r"&(a|am|amp|l|lt|g|gt)?…", text), text


def test_many_details_stay_within_block_limits() -> None:
    details = tuple((f"label {i}", f"value {i}") for i in range(1000))
    payload = build_payload([Notice("k", "firing", "T", details=details)])
    assert_within_limits(payload)
    fields = [text for kind, text in text_objects(payload) if kind == "field"]
    match = re.fullmatch(r"… and (\d+) more details", fields[-1])
    assert match is not None
    assert len(fields) - 1 + int(match.group(1)) == 1000


def test_render_console_is_plain_readable_text() -> None:
    notice = Notice(
        "error_rate:/api/<x>/",
        "firing",
        "Error rate 9 % > 5 % on /api/<x>/",
        details=(("Requests", "40 & more"),),
    )
    shown = render_console(build_payload([notice], service="shop"))
    assert (
        shown.splitlines()[0] == ":rotating_light: FIRING [shop] Error rate 9 % > 5 % on /api/<x>/"
    )
    assert "  Requests: 40 & more" in shown.splitlines()
    assert "error_rate:/api/<x>/" in shown
    assert "&lt;" not in shown and "&amp;" not in shown
    assert render_console({"text": "a &lt;b&gt; &amp;lt;"}) == "a <b> &lt;"


def test_render_console_indents_continuation_lines_under_their_field() -> None:
    notice = Notice(
        "payment_failures",
        "firing",
        "12 payment failures",
        details=(("Top reasons", "Card declined: 5 (500)\nExpired card: 4 (40)"), ("Window", "1h")),
    )
    lines = render_console(build_payload([notice])).splitlines()
    first = lines.index("  Top reasons: Card declined: 5 (500)")
    assert lines[first + 1] == " " * len("  Top reasons: ") + "Expired card: 4 (40)"
    assert lines[first + 2] == "  Window: 1h"


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 1.0),
        ("", 1.0),
        ("2", 2.0),
        (" 30 ", 30.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("nan", 1.0),
        ("soon", 1.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0),  # 100 s after epoch, now = 40 s
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),  # already past
    ],
)
def test_parse_retry_after(value: str | None, expected: float) -> None:
    assert parse_retry_after(value, now=40.0) == expected


# ---------------------------------------------------------------- delivery


def assert_no_secret(exc: BaseException, secret: str = SECRET_PATH) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        for shown in (str(seen), repr(seen), *map(str, seen.args)):
            assert secret not in shown and "SECRET" not in shown, shown
        seen = seen.__cause__ or seen.__context__


@pytest.fixture
def payload() -> dict[str, Any]:
    return build_payload([Notice("error_rate:/api/x/", "firing", "Error rate 12 % on <!channel>")])


def test_delivers_and_server_receives_the_json(
    httpserver: HTTPServer, payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="monitor_worker.slack")
    httpserver.expect_oneshot_request(SECRET_PATH, method="POST", json=payload).respond_with_data(
        "ok"
    )
    deliver(payload, httpserver.url_for(SECRET_PATH), timeout_s=5)
    httpserver.check_assertions()
    request, response = httpserver.log[0]
    assert response.status_code == 200
    assert request.mimetype == "application/json"
    assert json.loads(request.get_data()) == payload
    assert "&lt;!channel&gt;" in request.get_data(as_text=True)
    ours = [r for r in caplog.records if r.name == "monitor_worker.slack"]
    assert ours and all("SECRET" not in r.getMessage() for r in ours)


def test_any_2xx_is_success(httpserver: HTTPServer, payload: dict[str, Any]) -> None:
    httpserver.expect_request(SECRET_PATH).respond_with_data("", status=204)
    deliver(payload, httpserver.url_for(SECRET_PATH))
    assert len(httpserver.log) == 1


def test_uses_the_given_session(httpserver: HTTPServer, payload: dict[str, Any]) -> None:
    httpserver.expect_request(SECRET_PATH, headers={"X-Session": "mine"}).respond_with_data("ok")
    with requests.Session() as session:
        session.headers["X-Session"] = "mine"
        deliver(payload, httpserver.url_for(SECRET_PATH), session=session)
    httpserver.check_assertions()


@pytest.mark.parametrize(
    ("status", "body", "headers", "retry_after_s"),
    [
        (429, "rate_limited", {"Retry-After": "2"}, 2),
        (429, "rate_limited", {}, 1),
    ],
)
def test_rate_limited_is_transient_with_retry_after(
    httpserver: HTTPServer,
    payload: dict[str, Any],
    status: int,
    body: str,
    headers: dict[str, str],
    retry_after_s: float,
) -> None:
    httpserver.expect_request(SECRET_PATH).respond_with_data(body, status=status, headers=headers)
    with pytest.raises(SlackDeliveryError) as info:
        deliver(payload, httpserver.url_for(SECRET_PATH))
    assert info.value.permanent is False
    assert info.value.retry_after_s == retry_after_s
    assert "429" in str(info.value)
    assert_no_secret(info.value)


@pytest.mark.parametrize(
    ("status", "body", "permanent"),
    [
        (500, "internal_error", False),
        (502, "", False),
        (503, "service_unavailable", False),
        (400, "invalid_payload", True),
        (400, "no_text", True),
        (403, "action_prohibited", True),
        (404, "channel_not_found", True),
        (410, "channel_is_archived", True),
    ],
)
def test_http_errors_are_classified(
    httpserver: HTTPServer, payload: dict[str, Any], status: int, body: str, permanent: bool
) -> None:
    httpserver.expect_request(SECRET_PATH).respond_with_data(body, status=status)
    with pytest.raises(SlackDeliveryError) as info:
        deliver(payload, httpserver.url_for(SECRET_PATH))
    assert info.value.permanent is permanent
    assert info.value.retry_after_s is None
    assert f"HTTP {status}" in str(info.value)
    assert body in str(info.value)
    assert_no_secret(info.value)


def test_connection_refused_is_transient_and_hides_the_url(
    payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    with pytest.raises(SlackDeliveryError) as info:
        deliver(payload, url, timeout_s=2)
    exc = info.value
    assert exc.permanent is False
    assert "connection" in str(exc).lower() and "/services/***" in str(exc)
    assert exc.__cause__ is None and exc.__context__ is None
    assert_no_secret(exc)
    assert caplog.records  # the failure is logged ...
    assert url not in caplog.text and "SECRET" not in caplog.text  # ... without the secret


def test_read_timeout_is_transient(httpserver: HTTPServer, payload: dict[str, Any]) -> None:
    release = threading.Event()

    def stall(request: Request) -> Response:
        release.wait(10)
        return Response("ok")

    httpserver.expect_request(SECRET_PATH).respond_with_handler(stall)
    started = time.monotonic()
    try:
        with pytest.raises(SlackDeliveryError) as info:
            deliver(payload, httpserver.url_for(SECRET_PATH), timeout_s=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 5
    assert info.value.permanent is False
    assert "timed out" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert_no_secret(info.value)


@pytest.mark.parametrize(
    "url", ["", f"ftp://hooks.example{SECRET_PATH}", f"hooks.example{SECRET_PATH}"]
)
def test_unusable_url_is_permanent(payload: dict[str, Any], url: str) -> None:
    with pytest.raises(SlackDeliveryError) as info:
        deliver(payload, url)
    assert info.value.permanent is True
    assert_no_secret(info.value)
