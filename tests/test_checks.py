"""The checks an operator or a periodic job runs: queue lengths measured by a job, the whole
``check`` pass, and ``health``."""

from __future__ import annotations

import time

from monitor_worker import queues
from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.store import record_heartbeat

from .conftest import free_port


def _keys(report: dict[str, list[dict[str, object]]], kind: str) -> list[object]:
    return sorted(e["key"] for e in report[kind])


def test_check_celery_queue_records_evaluates_and_delivers(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings.with_overrides(queues=("other",)))
    t0 = time.time()
    reports = [
        monitor.check_celery_queue(queue_name="emails", queue_length=n, now=t0 + 30 * i)
        for i, n in enumerate((10, 40, 80, 130))
    ]
    assert _keys(reports[0], "fired") == []
    assert _keys(reports[3], "fired") == ["celery_queue:emails", "celery_queue_growing:emails"]
    summary = monitor.get_metrics_summary()
    emails = summary["celery"]["emails"]
    assert emails["length"] == 130 and emails["growing"] is True
    assert emails["growth_per_minute"] > 0
    # the seed's 150 above the threshold, then back to quiet: resolved
    calm = monitor.check_celery_queue("emails", 0, now=t0 + 700)
    assert "celery_queue:emails" in _keys(calm, "resolved")
    monitor.close()


def test_check_celery_queue_rejects_bad_arguments(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    for args in (("", 1), ("q", -1), ("q", True), ("q", 1.5)):
        try:
            monitor.check_celery_queue(*args)  # type: ignore[arg-type]
        except ValueError as exc:
            assert "queue" in str(exc)
        else:
            raise AssertionError(f"accepted {args!r}")


def test_check_alerts_with_an_unreachable_queue_broker_still_evaluates(
    settings: Settings,
) -> None:
    dead = settings.with_overrides(queues_broker_url=f"redis://127.0.0.1:{free_port()}/0")
    monitor = MetricsMonitor(settings=dead)
    for i in range(40):
        monitor.track_api_request("/api/x/", 0.1, 500 if i % 2 else 200)
    started = time.monotonic()
    report = monitor.check_alerts()
    assert time.monotonic() - started < 20
    assert "error_rate:/api/x/" in _keys(report, "fired")
    assert "broker_unreachable" in _keys(report, "fired")
    assert [e["key"] for e in report["errors"]] == ["broker_unreachable"]
    monitor.close()


def test_health_needs_both_heartbeats(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings)
    from monitor_worker import checks

    now = time.time()
    assert checks.health(monitor, now)["healthy"] is False
    record_heartbeat(monitor.store(), settings, "worker", now)
    assert checks.health(monitor, now)["healthy"] is False
    record_heartbeat(monitor.store(), settings, "beat", now)
    report = checks.health(monitor, now)
    assert report["healthy"] is True and report["pending_events"] == 0
    assert checks.health(monitor, now + 3600)["healthy"] is False  # stale heartbeats


def test_a_measured_queue_is_in_every_summary_like_a_configured_one(settings: Settings) -> None:
    configured = settings.with_overrides(queues=("celery",))
    job = MetricsMonitor(settings=configured)
    t0 = time.time()
    for i, n in enumerate((5, 9)):
        job.check_celery_queue("emails", n, now=t0 - 60 + 30 * i)
        job.check_celery_queue("celery", n, now=t0 - 60 + 30 * i)
    job.close()
    reader = MetricsMonitor(settings=configured)  # another process: nothing in memory
    celery = reader.get_metrics_summary()["celery"]
    assert set(celery) == {"celery", "emails"}
    assert celery["emails"]["length"] == 9 and set(celery["emails"]) == set(celery["celery"])
    # gone once its samples are no longer kept
    later = reader.get_metrics_summary(now=t0 + queues.SAMPLES_TTL_S + 1)["celery"]
    assert "emails" not in later
    reader.close()


def test_measured_queue_names_are_capped(settings: Settings) -> None:
    monitor = MetricsMonitor(settings=settings.with_overrides(queues=("celery",), max_queues=2))
    now = time.time()
    for name in ("q1", "q2"):
        assert monitor.check_celery_queue(name, 1, now=now)["errors"] == []
    refused = monitor.check_celery_queue("q3", 500, now=now)
    assert [e["key"] for e in refused["errors"]] == ["celery_queue:q3"]
    assert "MONITOR_MAX_QUEUES" in refused["errors"][0]["error"]
    assert "celery_queue:q3" not in _keys(refused, "fired")
    assert monitor.check_celery_queue("q1", 2, now=now)["errors"] == []  # known names go on
    assert set(monitor.get_metrics_summary()["celery"]) == {"q1", "q2"}
    monitor.close()
