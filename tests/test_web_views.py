"""The dashboard's shared snapshots and series, against the real store: one read serves every
viewer for ``MONITOR_WEB_CACHE_SECONDS``, bodies follow their views, the series agrees with
the window and includes events not aggregated yet."""

from __future__ import annotations

import time

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.web.views import Views, load_series

from .helpers import wait_for


def test_a_snapshot_serves_every_viewer_until_it_is_too_old(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    monitor.track_api_request("/a/", 0.1, 200)
    views = Views(monitor, max_age_s=0.5)
    first, at = views.get("summary")
    monitor.track_api_request("/a/", 0.1, 200)
    assert monitor.flush(5)
    again, at_again = views.get("summary")
    assert again is first and at_again == at  # one read for both viewers
    newer = wait_for(lambda: views.get("summary")[0] is not first and views.get("summary"))
    assert newer[0]["api"]["/a/"]["total_requests"] == 2 and newer[1] > at
    monitor.close()


def test_bodies_are_rendered_once_per_snapshot_and_refreshed_ahead(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    views = Views(monitor, max_age_s=1.0)
    renders: list[float] = []

    def render() -> bytes:
        value, generated_at = views.get("summary")
        renders.append(generated_at)
        return repr(sorted(value["api"])).encode()

    body = views.body("summary", ("summary",), render)
    assert views.body("summary", ("summary",), render) is body and len(renders) == 1
    monitor.track_api_request("/b/", 0.1, 200)
    assert monitor.flush(5)
    # past REFRESH_AHEAD of its age the old body is still served while the next one renders
    fresh = wait_for(lambda: views.body("summary", ("summary",), render) != body, timeout=10)
    assert fresh and views.body("summary", ("summary",), render) == b"['/b/']"
    assert renders == sorted(renders) and len(renders) >= 2
    views.forget("summary")
    monitor.track_api_request("/c/", 0.1, 200)
    assert monitor.flush(5)
    assert views.body("summary", ("summary",), render) == b"['/b/', '/c/']"  # at once
    monitor.close()


def test_series_agrees_with_the_window_and_reuses_parsed_minutes(settings: Settings) -> None:
    capped = settings.with_overrides(max_endpoints=2)  # __other__ lives in every shard
    monitor = MetricsMonitor(settings=capped)
    now = time.time()
    for k in range(30):
        for i in range(6):
            monitor.track_api_request(f"/s/{i}/", 0.01 * (i + 1), 500 if k % 5 == 0 else 200,
                                      timestamp=now - 60 * (k % 10))  # fmt: skip
    assert monitor.flush(5)
    views = Views(monitor, max_age_s=0)
    pending = load_series(views, now)  # nothing aggregated yet: all from raw events
    monitor.aggregate()
    aggregated = load_series(views, now)
    again = load_series(views, now)  # parsed minutes reused
    fresh = load_series(Views(monitor, max_age_s=0), now)
    assert aggregated == again == fresh
    # before aggregation the cap admits names as a summary would guess; the counts agree
    total = sum(p["requests"] for points in pending["series"].values() for p in points)
    assert total == 6 * 30 and len(pending["series"]) == len(aggregated["series"]) == 3
    summary = monitor.get_metrics_summary(now=now)
    assert set(aggregated["series"]) == set(summary["api"])
    for endpoint, points in aggregated["series"].items():
        assert sum(p["requests"] for p in points) == summary["api"][endpoint]["total_requests"]
        assert sum(p["errors"] for p in points) == summary["api"][endpoint]["error_count"]
        assert len(points) == 10 and all(p["t"] % 60 == 0 for p in points)
    assert sum(p["requests"] for p in aggregated["series"]["__other__"]) == 4 * 30
    monitor.close()
