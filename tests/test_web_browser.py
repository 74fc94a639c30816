"""The page in a real browser: Debian's headless Chromium driven by Playwright, against a
server reading a store seeded with real tracked traffic. Screenshots at 1280 and 390 px go to
``tests/artifacts/`` (ignored by git)."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from monitor_worker import queues
from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor

from .conftest import free_port
from .web_server import (
    MEASURED_QUEUE,
    SLOW_ENDPOINT,
    TASK,
    XSS_ENDPOINT,
    XSS_METRIC,
    WebServer,
    env_for,
)

pytestmark = pytest.mark.timeout(120)

CHROMIUM = os.environ.get("MONITOR_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "browser-token-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Chromium is needed under CI ({CHROMIUM}; .ci/run installs it)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Watched:
    """A page whose console errors, uncaught exceptions and dialogs are recorded."""

    def __init__(self, browser: Any, width: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

    def load(self, url: str) -> Any:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-loaded]", timeout=15_000)
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def wide(browser: Any) -> Iterator[Watched]:
    watched = Watched(browser, 1280)
    yield watched
    watched.close()


def rows(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all(
            "#endpoints tbody tr", "rows => rows.map(r => r.getAttribute('data-endpoint'))"
        )
    )


def test_dashboard_in_chromium(
    wide: Watched, web: WebServer, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    summary = seeded[1]
    page = wide.load(web.url)
    page.evaluate("window.loadedOnce = true")

    # the firing alert, with its value in its unit, since when and its last delivery
    alert = page.locator(f'#alerts li[data-key="slow_response:{SLOW_ENDPOINT}"]')
    assert alert.count() == 1
    assert "since" in alert.inner_text() and "last delivery" in alert.inner_text()
    assert "never" not in alert.inner_text().split("last delivery")[1].split("·")[0]
    assert re.search(r"P95 \d+\.\d{3} s · since", alert.inner_text()), alert.inner_text()
    queue_alert = page.locator(f'#alerts li[data-key="celery_queue:{MEASURED_QUEUE}"]')
    assert "150 messages · since" in queue_alert.inner_text()  # a count: no decimals
    assert "value" not in page.locator("#alerts").inner_text()
    assert page.locator("#alerts .unknown-note").is_hidden()

    # one row per endpoint, the XSS name shown as those characters, no script run
    assert sorted(rows(page)) == sorted(summary["api"])
    cell = page.locator("#endpoints tbody tr td.name").filter(has_text="onerror")
    assert cell.inner_text() == XSS_ENDPOINT
    assert page.locator("img").count() == 0 and page.locator("#payments b").count() == 0
    assert "<b>bold</b>" in page.locator("#payments").inner_text()

    # rows over a threshold are marked
    over = page.eval_on_selector_all(
        "#endpoints tbody tr.over", "rows => rows.map(r => r.getAttribute('data-endpoint'))"
    )
    assert set(over) == {SLOW_ENDPOINT, "/api/broken/"}

    # sorted by P95 after a click (descending: worst first), then ascending after another
    header = page.locator('#endpoints th[data-sort="p95_response_time"]')
    header.click()
    by_p95 = sorted(summary["api"], key=lambda e: (-summary["api"][e]["p95_response_time"], e))
    assert rows(page) == by_p95
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert rows(page)[0] != SLOW_ENDPOINT and rows(page)[-1] == SLOW_ENDPOINT
    assert header.get_attribute("aria-sort") == "ascending"
    # the first click on the default column (requests) sorts it worst first too
    requests_header = page.locator('#endpoints th[data-sort="total_requests"]')
    requests_header.click()
    assert requests_header.get_attribute("aria-sort") == "descending"
    by_requests = sorted(summary["api"], key=lambda e: (-summary["api"][e]["total_requests"], e))
    assert rows(page) == by_requests
    requests_header.click()
    ascending = sorted(summary["api"], key=lambda e: (summary["api"][e]["total_requests"], e))
    assert rows(page) == ascending

    # a sparkline drawn for each row: the slow endpoint's line has points at several heights,
    # one per finished minute; the minute under way is a separate segment (it is not over)
    spark = f'#endpoints tr[data-endpoint="{SLOW_ENDPOINT}"] svg'
    points = page.get_attribute(f"{spark} polyline:not(.current)", "points")
    assert points is not None
    heights = {float(p.split(",")[1]) for p in points.split()}
    assert len(points.split()) == 59 and len(heights) > 1
    current = page.get_attribute(f"{spark} polyline.current", "points")
    assert current is not None and current.split()[0] == points.split()[-1]
    assert [float(p.split(",")[0]) for p in current.split()][-1] == 100.0
    dash = page.eval_on_selector(
        f"{spark} polyline.current", "p => getComputedStyle(p).strokeDasharray"
    )
    assert dash not in ("", "none"), dash
    assert page.locator("#endpoints tbody svg").count() == len(summary["api"])

    # a section per kind; a metric named like a script shown as those characters
    task_row = page.locator(f'#tasks tr[data-name="{TASK}"]')
    assert task_row.locator("td").all_inner_texts()[:4] == [TASK, "12", "8.3", "1"]
    assert "billing" in page.locator("#task-queues").inner_text()
    assert page.locator('#databases tr[data-name="default"] td').all_inner_texts()[1:3] == [
        "20",
        "1",
    ]
    assert page.locator('#caches tr[data-name="sessions"] td').all_inner_texts()[3] == "70.0"
    metric = page.locator("#metrics td.name").filter(has_text="alert(3)")
    assert metric.inner_text() == XSS_METRIC and page.locator("#metrics script").count() == 0
    assert "1 ok · 50.0 %" in page.locator('#metrics tr[data-name="email.sent"]').inner_text()

    # queues and health
    assert MEASURED_QUEUE in page.locator("#queues").inner_text()
    assert "Outbox" in page.locator("#health").inner_text()

    # a silence created through the form, then removed
    form = page.locator("#silence-form")
    form.locator('input[name="key"]').fill("payment_failures")
    form.locator('input[name="duration"]').fill("30m")
    form.locator('input[name="reason"]').fill("<script>alert(2)</script>")
    form.locator('button[type="submit"]').click()
    item = page.locator('#silences li[data-pattern="payment_failures"]')
    item.wait_for(timeout=10_000)
    assert "<script>alert(2)</script>" in item.inner_text() and "by local" in item.inner_text()
    listed = requests.get(web.url + "api/v1/silences", timeout=10).json()["silences"]
    assert [s["created_by"] for s in listed if s["pattern"] == "payment_failures"] == ["local"]
    item.locator("button.remove").click()
    item.wait_for(state="detached", timeout=10_000)
    listed = requests.get(web.url + "api/v1/silences", timeout=10).json()["silences"]
    assert all(s["pattern"] != "payment_failures" for s in listed)

    assert wide.dialogs == [] and wide.problems == [], wide.problems + wide.dialogs

    # a bad silence shows one line of feedback naming the parameter (Chromium logs the 400)
    form.locator('input[name="key"]').fill("a*b")
    form.locator('button[type="submit"]').click()
    page.locator("#silence-form .form-error").filter(has_text="pattern").wait_for(timeout=10_000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-1280.png"), full_page=True)

    # it refreshes itself (every 10 s) without reloading; one failed request is 100 % errors
    # but below MONITOR_MIN_REQUESTS, where no rule judges: the row is not marked
    monitor = MetricsMonitor(settings=seeded[0])
    monitor.track_api_request("/api/new/", 0.1, 500)
    assert monitor.flush(10)
    monitor.close()
    new = page.locator('#endpoints tr[data-endpoint="/api/new/"]')
    new.wait_for(timeout=20_000)
    assert page.evaluate("window.loadedOnce") is True
    assert new.locator("td").nth(2).inner_text() == "100.00"
    assert "over" not in (new.get_attribute("class") or "")

    assert wide.dialogs == []
    assert wide.problems == [
        "console error: Failed to load resource: the server responded with a status of 400 "
        "(Bad Request)"
    ]


def test_range_selector_switches_the_table_and_sparklines_to_history(
    wide: Watched, web: WebServer, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    monitor = MetricsMonitor(settings=seeded[0])
    assert monitor.archive(now=time.time() + 120).minutes > 0  # as beat would, a minute later
    history = monitor.get_history(time.time() - 86400, step="1h")
    monitor.close()
    page = wide.load(web.url)
    options = page.eval_on_selector_all("#range option", "os => os.map(o => o.value)")
    assert options == ["1h", "24h", "7d"]  # 30 d is more than Redis keeps by default
    live = rows(page)

    page.select_option("#range", "24h")
    page.locator("#window-info").filter(has_text="archived").wait_for(timeout=15_000)
    assert sorted(rows(page)) == sorted(history["api"])
    header = page.locator('#endpoints th[data-sort="p95_response_time"]').inner_text()
    assert header == "Worst P95 s"
    slow = page.locator(f'#endpoints tr[data-endpoint="{SLOW_ENDPOINT}"] td')
    assert slow.nth(1).inner_text() == str(
        sum(r["requests"] for r in history["api"][SLOW_ENDPOINT])
    )
    worst = max(r["p95_response_time"] for r in history["api"][SLOW_ENDPOINT])
    assert slow.nth(4).inner_text() == f"{worst:.3f}"
    points = page.get_attribute(
        f'#endpoints tr[data-endpoint="{SLOW_ENDPOINT}"] svg polyline:not(.current)', "points"
    )
    assert points is not None and len(points.split()) == 23  # one per finished hour
    assert "in the last 24 h" in page.locator("#payments .total").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-24h-1280.png"), full_page=True)

    page.select_option("#range", "1h")
    page.locator("#window-info").filter(has_text="last 60 min").wait_for(timeout=15_000)
    assert sorted(rows(page)) == sorted(live)
    assert wide.problems == [] and wide.dialogs == [], wide.problems


def test_narrow_screen_does_not_scroll_sideways(browser: Any, web: WebServer) -> None:
    narrow = Watched(browser, 390)
    try:
        page = narrow.load(web.url)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        # short header labels that fit (the long one as the title), and a note for the
        # hidden column
        labels = page.eval_on_selector_all(
            "#endpoints th", "ths => ths.filter(t => t.offsetParent).map(t => t.innerText)"
        )
        assert labels == ["Endpoint", "Req", "Err %", "P95 s", "/ min"], labels
        cut = page.eval_on_selector_all(
            "#endpoints th", "ths => ths.filter(t => t.scrollWidth > t.clientWidth).length"
        )
        assert cut == 0
        titles = page.eval_on_selector_all("#endpoints th[data-sort]", "ts => ts.map(t => t.title)")
        assert titles[0] == "Requests"
        assert "Avg s column is hidden" in page.locator("#endpoints ~ .narrow-note").inner_text()
        # an endpoint's name breaks after a "/", never leaving one character on a line
        lines = page.evaluate(
            """() => [...document.querySelectorAll('#endpoints td.name')].map(td => {
                const range = document.createRange();
                range.selectNodeContents(td);
                const tops = [...range.getClientRects()].map(r => Math.round(r.top));
                return [td.innerText, new Set(tops).size];
            })"""
        )
        assert all(n == 1 for name, n in lines if len(name) <= 12), lines
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-390.png"), full_page=True)
        assert narrow.problems == []
    finally:
        narrow.close()


def test_with_tokens_the_page_asks_for_one(
    browser: Any, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    env = env_for(seeded[0], MONITOR_WEB_TOKENS=f"carol={TOKEN}")
    with WebServer(env) as guarded:
        watched = Watched(browser, 1280)
        try:
            page = watched.page
            page.goto(guarded.url)
            assert page.url.endswith("/login")
            box = page.locator('input[name="token"]').bounding_box()
            assert box is not None and box["height"] < 48, box  # one line, not a tall box
            page.fill('input[name="token"]', "wrong-token-000000000")
            page.click('button[type="submit"]')
            page.wait_for_url("**/login?failed=1")
            assert "not accepted" in page.locator("#login-error").inner_text()
            page.fill('input[name="token"]', TOKEN)
            started = time.monotonic()
            page.click('button[type="submit"]')
            page.wait_for_selector("body[data-loaded]", timeout=15_000)
            assert time.monotonic() - started < 15
            assert page.locator("#user").inner_text() == "carol"
            assert page.locator("#logout").is_visible()
            cookies = {c["name"]: c for c in watched.context.cookies()}
            session = cookies["mw_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict"
            assert page.evaluate("document.cookie") == ""  # HttpOnly: not readable by scripts
            page.click("#logout")
            page.wait_for_url("**/login")
            # the failed login is a 303 the browser follows: no console error is expected
            assert watched.problems == [], watched.problems
        finally:
            watched.close()


def test_login_page_on_a_narrow_screen(
    browser: Any, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    env = env_for(seeded[0], MONITOR_WEB_TOKENS=f"carol={TOKEN}")
    with WebServer(env) as guarded:
        narrow = Watched(browser, 390)
        try:
            page = narrow.page
            page.goto(guarded.url)
            page.wait_for_url("**/login")
            token = page.locator('input[name="token"]').bounding_box()
            button = page.locator('button[type="submit"]').bounding_box()
            assert token is not None and button is not None
            assert token["height"] < 48 and abs(token["height"] - button["height"]) < 12
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "login-390.png"), full_page=True)
            assert narrow.problems == [], narrow.problems
        finally:
            narrow.close()


def test_silenced_alert_is_muted_without_reminder(
    wide: Watched, web: WebServer, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    page = wide.load(web.url)
    key = f"slow_response:{SLOW_ENDPOINT}"
    alert = page.locator(f'#alerts li[data-key="{key}"]')
    assert "next reminder after" in alert.inner_text()  # delivered, so throttled
    assert "silenced" not in (alert.get_attribute("class") or "")
    form = page.locator("#silence-form")
    form.locator('input[name="key"]').fill("slow_response:*")
    form.locator('input[name="duration"]').fill("45m")
    form.locator('button[type="submit"]').click()
    muted = page.locator(f'#alerts li.silenced[data-key="{key}"]')
    muted.wait_for(timeout=15_000)
    text = muted.inner_text()
    assert re.search(r"silenced by slow_response:\* until \S", text), text
    assert "next reminder" not in text
    colour = muted.evaluate("li => getComputedStyle(li).borderLeftColor")
    firing = page.locator("#alerts li:not(.silenced)").first
    assert colour != firing.evaluate("li => getComputedStyle(li).borderLeftColor")
    # the silenced ones come after the ones still alerting
    classes = page.eval_on_selector_all("#alerts li", "ls => ls.map(l => l.className)")
    assert classes == sorted(classes, key=lambda c: c == "silenced")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-silenced-1280.png"), full_page=True)
    page.locator('#silences li[data-pattern="slow_response:*"] button.remove').click()
    page.locator(f'#alerts li:not(.silenced)[data-key="{key}"]').wait_for(timeout=15_000)
    assert wide.problems == [] and wide.dialogs == [], wide.problems


def test_missing_queue_is_shown_missing(
    wide: Watched, web: WebServer, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    name = f"absent-{uuid.uuid4().hex[:8]}"
    settings = seeded[0].with_overrides(queues=(name,))
    client = redis.Redis.from_url(settings.redis_url)
    try:
        now = time.time()
        lengths = queues.check_queues(client, settings, now)  # the real broker: no such queue
        assert lengths is not None and lengths[name].exists is False
        assert queues.admit_measured(client, settings, name, now)  # so the page lists it
    finally:
        client.close()
    page = wide.load(web.url)
    row = page.locator(f'#queues tr[data-queue="{name}"]')
    assert row.locator("td").nth(1).inner_text() == "missing"
    measured = page.locator(f'#queues tr[data-queue="{MEASURED_QUEUE}"] td').nth(1)
    assert measured.inner_text() == "150"
    assert wide.problems == [], wide.problems


def test_store_unreachable_says_unknown_not_calm(
    browser: Any, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    dead = seeded[0].with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with WebServer(env_for(dead)) as down:
        watched = Watched(browser, 1280)
        try:
            page = watched.page
            page.goto(down.url)
            page.locator("#status.error").filter(has_text="unreachable").wait_for(timeout=30_000)
            text = page.locator("main").inner_text()
            for calm in ("No alert is firing.", "No request in the window.", "No silence"):
                assert calm not in text, text
            notes = page.eval_on_selector_all(
                "main .unknown-note", "ns => ns.filter(n => n.offsetParent).map(n => n.innerText)"
            )
            sections = page.locator("main section").count()
            assert notes == ["unknown — the metrics store is unreachable"] * sections, notes
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-unreachable-1280.png"), full_page=True)
            # Chromium logs each 503; nothing else may go wrong
            assert all("503" in p for p in watched.problems), watched.problems
        finally:
            watched.close()
