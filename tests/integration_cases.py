"""What every framework integration's tests share: the example apps' request table, a
monitor on the test store, and reading statuses back through ``get_metrics_summary()``.

The summary counts requests and errors (status >= ``MONITOR_ERROR_STATUS_MIN``) per endpoint;
reading the same raw events with several thresholds splits them by status.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from monitor_worker.config import Settings
from monitor_worker.integrations._core import UNMATCHED
from monitor_worker.monitor import MetricsMonitor

from .helpers import wait_for

# status classes told apart (a recorded status counts under the largest bound <= it)
STATUS_BOUNDS = (200, 300, 400, 403, 404, 405, 406, 418, 419, 422, 423, 499, 500, 501)


def status_counts(settings: Settings) -> dict[str, dict[int, int]] | None:
    """endpoint -> {status bound: requests}, read through ``get_metrics_summary()``; None when
    events arrived between the reads."""
    totals: list[dict[str, int]] = []
    at_or_above: dict[int, dict[str, int]] = {}
    for bound in STATUS_BOUNDS[1:]:
        reader = MetricsMonitor(settings.with_overrides(error_status_min=bound))
        try:
            api = reader.get_metrics_summary()["api"]
        finally:
            reader.close()
        totals.append({name: stats["total_requests"] for name, stats in api.items()})
        at_or_above[bound] = {name: stats["error_count"] for name, stats in api.items()}
    if any(t != totals[0] for t in totals):
        return None
    counts: dict[str, dict[int, int]] = {}
    for name, total in totals[0].items():
        below = total
        split: dict[int, int] = {}
        for bound, upper in zip(STATUS_BOUNDS, [*STATUS_BOUNDS[1:], None], strict=True):
            above = at_or_above[upper][name] if upper is not None else 0
            if below - above:
                split[bound] = below - above
            below = above
        counts[name] = split
    return counts


def response_times(monitor: MetricsMonitor) -> dict[str, float]:
    """endpoint -> average response time (s)."""
    api = monitor.get_metrics_summary()["api"]
    return {name: stats["avg_response_time"] for name, stats in api.items()}


def wait_counts(
    settings: Settings, want: dict[str, dict[int, int]], app_monitor: MetricsMonitor | None = None
) -> None:
    """Poll until the store holds exactly ``want``; ``app_monitor`` (the app's, when it runs
    in this process) is flushed first; other processes deliver within their flush interval."""
    got: dict[str, dict[int, int]] | None = {}

    def matches() -> bool:
        nonlocal got
        if app_monitor is not None:
            app_monitor.flush()
        got = status_counts(settings)
        return got == want

    try:
        wait_for(matches, timeout=10, interval=0.1)
    except AssertionError:
        raise AssertionError(f"recorded {got}, want {want}") from None


@dataclass(frozen=True)
class Case:
    """One request to an example app and what it must record (None: nothing)."""

    method: str
    path: str
    endpoint: str | None  # "{users}" stands for the framework's users route template
    status: int


# The same table runs against every framework's example app.
CASES = (
    Case("GET", "/api/review/today/", "/api/review/today/", 200),
    Case("GET", "/api/users/42/", "{users}", 200),
    Case("GET", "/api/users/7/?page=2", "{users}", 200),
    Case("GET", "/api/boom/", "/api/boom/", 500),
    Case("GET", "/health", None, 200),
    Case("GET", "/healthz/deep", None, 404),
    Case("OPTIONS", "/api/review/today/", None, 0),
    Case("GET", "/no/such/page/", UNMATCHED, 404),
    Case("GET", "/wp-login.php", UNMATCHED, 404),
    Case("POST", "/api/review/today/", UNMATCHED, 405),
)


def expected(users_template: str, cases: tuple[Case, ...] = CASES) -> dict[str, dict[int, int]]:
    want: dict[str, dict[int, int]] = {}
    for case in cases:
        if case.endpoint is None:
            continue
        name = users_template if case.endpoint == "{users}" else case.endpoint
        bound = max(b for b in STATUS_BOUNDS if b <= case.status)
        split = want.setdefault(name, {})
        split[bound] = split.get(bound, 0) + 1
    return want


@pytest.fixture
def monitor(settings: Settings) -> Iterator[MetricsMonitor]:
    """A monitor on the test store, under the test's own key prefix."""
    tracked = MetricsMonitor(settings)
    yield tracked
    tracked.close()
