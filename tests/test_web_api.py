"""The dashboard server over real HTTP: every API endpoint and bad parameter, the security
rules of a loopback server without tokens, ``/metrics`` parsed back with client_python's
parsers, the OpenAPI document checked by schemathesis, and the store down (503)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import hypothesis
import pytest
import requests
import schemathesis
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor

from .conftest import free_port
from .web_server import (
    ERROR_ENDPOINT,
    MEASURED_QUEUE,
    SLOW_ENDPOINT,
    TASK,
    XSS_ENDPOINT,
    XSS_METRIC,
    WebServer,
    env_for,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def http(web: WebServer) -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(http: requests.Session, web: WebServer, path: str, **kw: Any) -> requests.Response:
    return http.get(web.url + path.lstrip("/"), timeout=30, **kw)


def csrf(http: requests.Session, web: WebServer) -> str:
    token: str = get(http, web, "api/v1/session").json()["csrf_token"]
    return token


def assert_error(response: requests.Response, status: int, parameter: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "parameter"} and body["parameter"] == parameter, body
    assert "Traceback" not in body["error"] and "\n" not in body["error"]


# -- reading -------------------------------------------------------------------------------------


def test_summary_is_the_monitor_summary_with_generated_at(
    http: requests.Session, web: WebServer, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    expected = seeded[1]
    body = get(http, web, "api/v1/summary").json()
    assert abs(body.pop("generated_at") - time.time()) < 30
    assert body["api"] == expected["api"]
    assert body["payments"] == expected["payments"]
    assert body["api"][XSS_ENDPOINT]["total_requests"] == 40
    assert body["celery"][MEASURED_QUEUE]["length"] == 150
    assert body["reasons_folded"] == 0 and body["endpoints_folded"] == 0
    for section in ("tasks", "task_queues", "db", "cache", "metrics"):
        assert body[section] == expected[section], section
    assert body["tasks"][TASK]["runs"] == 12 and body["cache"]["sessions"]["hit_rate"] == 70.0


def test_summary_of_a_past_window(http: requests.Session, web: WebServer) -> None:
    at = time.time() - 7200
    body = get(http, web, "api/v1/summary", params={"now": at}).json()
    assert body["timestamp"] == pytest.approx(at) and body["generated_at"] == pytest.approx(at)
    assert body["api"] == {}


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "nan", "inf", "1e12", ""])
def test_summary_rejects_a_bad_now(http: requests.Session, web: WebServer, bad: str) -> None:
    assert_error(get(http, web, "api/v1/summary", params={"now": bad}), 400, "now")


def test_series_per_minute(http: requests.Session, web: WebServer) -> None:
    params = [("endpoint", SLOW_ENDPOINT), ("endpoint", ERROR_ENDPOINT), ("endpoint", "/none/")]
    body = get(http, web, "api/v1/series", params=params).json()
    assert body["step_seconds"] == 60 and "generated_at" in body
    assert set(body["series"]) == {SLOW_ENDPOINT, ERROR_ENDPOINT, "/none/"}
    slow = body["series"][SLOW_ENDPOINT]
    assert sum(p["requests"] for p in slow) == 40
    assert all(p["t"] % 60 == 0 and p["p95_response_time"] >= 2.9 for p in slow)
    assert [p["t"] for p in slow] == sorted(p["t"] for p in slow)
    assert len(slow) >= 15  # one request every 30 s over 20 minutes
    errors = body["series"][ERROR_ENDPOINT]
    assert sum(p["errors"] for p in errors) == 20
    assert body["series"]["/none/"] == []
    assert sum(p["failures"] for p in body["payments"]) == 15
    everything = get(http, web, "api/v1/series", params={"endpoint": "*"}).json()
    assert XSS_ENDPOINT in everything["series"] and len(everything["series"]) == 9


@pytest.mark.parametrize(
    "params", [{}, {"endpoint": ""}, {"endpoint": "x" * 201}, [("endpoint", "/a/")] * 1001]
)
def test_series_rejects_bad_endpoints(http: requests.Session, web: WebServer, params: Any) -> None:
    assert_error(get(http, web, "api/v1/series", params=params), 400, "endpoint")


def test_alerts_firing_and_deliveries(http: requests.Session, web: WebServer) -> None:
    body = get(http, web, "api/v1/alerts").json()
    firing = {a["key"]: a for a in body["firing"]}
    slow = firing["slow_response:" + SLOW_ENDPOINT]
    assert slow["since"] > 0 and slow["last_sent"] is not None
    assert slow["throttled_until"] > slow["last_sent"]
    assert "celery_queue:" + MEASURED_QUEUE in firing
    outcomes = {(d["key"], d["outcome"]) for d in body["deliveries"]}
    assert ("slow_response:" + SLOW_ENDPOINT, "sent") in outcomes
    assert body["delivery_totals"]["sent"] >= 3 and len(body["deliveries"]) <= 100


def test_queues_include_a_measured_queue(http: requests.Session, web: WebServer) -> None:
    body = get(http, web, "api/v1/queues").json()
    emails = body["queues"][MEASURED_QUEUE]
    assert emails["length"] == 150 and emails["growth_per_minute"] > 0 and emails["growing"]
    assert set(body) == {"generated_at", "queues", "broker"}


def test_health(http: requests.Session, web: WebServer) -> None:
    body = get(http, web, "api/v1/health").json()
    assert body["healthy"] is False  # no worker nor beat runs here
    assert body["worker_seen_s_ago"] is None and body["beat_seen_s_ago"] is None
    assert body["outbox"] == 0 and body["outbox_oldest_s"] is None
    assert body["pending_events"] == 0 and body["last_slack_error"] is None


def test_unknown_paths_and_methods_answer_json(http: requests.Session, web: WebServer) -> None:
    assert_error(get(http, web, "api/v1/nothing"), 404, None)
    headers = {"X-CSRF-Token": csrf(http, web)}
    for method in ("PUT", "PATCH"):
        response = http.request(method, web.url + "api/v1/silences", headers=headers, timeout=10)
        assert_error(response, 405, None)


# -- history ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archived(seeded: tuple[Settings, dict[str, Any]]) -> float:
    """The seeded minutes archived into history (as the beat task would, a minute later);
    returns the archive's now."""
    monitor = MetricsMonitor(settings=seeded[0])
    at = time.time() + 120
    assert monitor.archive(now=at).minutes > 0
    monitor.close()
    return at


def test_history_is_get_history_over_http(
    http: requests.Session,
    web: WebServer,
    seeded: tuple[Settings, dict[str, Any]],
    archived: float,
) -> None:
    monitor = MetricsMonitor(settings=seeded[0])
    since, until = archived - 3 * 3600, archived
    for step in ("1m", "1h", "1d"):
        params = {"since": since, "until": until, "step": step}
        body = get(http, web, "api/v1/history", params=params).json()
        assert abs(body.pop("generated_at") - time.time()) < 30
        local = monitor.get_history(since, until, step=step)
        assert body == json.loads(json.dumps(local))
        assert sum(r["requests"] for r in body["api"][SLOW_ENDPOINT]) == 40
        assert sum(r["requests"] for r in body["api"][XSS_ENDPOINT]) == 40
        assert sum(p["failures"] for p in body["payments"]) == 15
    one = get(http, web, "api/v1/history", params={"since": since, "endpoint": XSS_ENDPOINT})
    assert list(one.json()["api"]) == [XSS_ENDPOINT]
    session = get(http, web, "api/v1/session").json()
    assert session["history"] == {"minutes_retention_s": 86400.0, "hours_retention_s": 604800.0}
    monitor.close()


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": "1e12"}, "since"),
        ({"since": "1000", "until": "abc"}, "until"),
        ({"since": "2000", "until": "1000"}, "until"),
        ({"since": "1000", "step": "5m"}, "step"),
        ({"since": "1000", "step": "1m"}, "step"),  # older than minute rows are kept
        ({"since": "1000", "endpoint": ""}, "endpoint"),
        ({"since": "1000", "endpoint": "x" * 201}, "endpoint"),
    ],
)
def test_history_rejects_bad_parameters(
    http: requests.Session, web: WebServer, params: dict[str, str], parameter: str
) -> None:
    assert_error(get(http, web, "api/v1/history", params=params), 400, parameter)


# -- silences ------------------------------------------------------------------------------------


def test_silence_created_listed_and_removed(http: requests.Session, web: WebServer) -> None:
    headers = {"X-CSRF-Token": csrf(http, web)}
    made = http.post(
        web.url + "api/v1/silences",
        json={"key": "slow_response:/api/*", "duration": "2h", "reason": "deploy <b>"},
        headers=headers,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    silence = made.json()
    assert silence["created_by"] == "local" and silence["reason"] == "deploy <b>"
    assert silence["until"] - silence["created"] == pytest.approx(7200)
    listed = get(http, web, "api/v1/silences").json()["silences"]
    assert silence in listed
    firing = get(http, web, "api/v1/alerts").json()["firing"]
    slow = next(a for a in firing if a["key"] == "slow_response:" + SLOW_ENDPOINT)
    assert slow["silenced"] == "slow_response:/api/*"
    path = "api/v1/silences/" + quote("slow_response:/api/*", safe="")
    removed = http.delete(web.url + path, headers=headers, timeout=10)
    assert removed.status_code == 200 and removed.json() == {"removed": "slow_response:/api/*"}
    assert_error(http.delete(web.url + path, headers=headers, timeout=10), 404, "key")
    assert silence not in get(http, web, "api/v1/silences").json()["silences"]


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"duration": "2h"}, "key"),
        ({"key": "a*b", "duration": "2h"}, "key"),
        ({"key": "", "duration": "2h"}, "key"),
        ({"key": "x" * 501, "duration": "2h"}, "key"),
        ({"key": "a", "duration": "soon"}, "duration"),
        ({"key": "a", "duration": "0s"}, "duration"),
        ({"key": "a", "duration": "400d"}, "duration"),
        ({"key": "a"}, "duration"),
        ({"key": "a", "duration": 5}, "duration"),
        ({"key": "a", "duration": "1h", "reason": ["x"]}, "reason"),
        ([1, 2], "body"),
        ("not json", "body"),
    ],
)
def test_silence_rejects_bad_input_naming_it(
    http: requests.Session, web: WebServer, body: Any, parameter: str
) -> None:
    headers = {"X-CSRF-Token": csrf(http, web), "Content-Type": "application/json"}
    data = body if isinstance(body, str) else __import__("json").dumps(body)
    response = http.post(web.url + "api/v1/silences", data=data, headers=headers, timeout=10)
    assert_error(response, 400, parameter)


# -- security ------------------------------------------------------------------------------------


def test_post_without_csrf_token_refused(http: requests.Session, web: WebServer) -> None:
    body = {"key": "csrf-test", "duration": "1h"}
    for headers in ({}, {"X-CSRF-Token": "0" * 64}):
        response = http.post(web.url + "api/v1/silences", json=body, headers=headers, timeout=10)
        assert_error(response, 403, "x-csrf-token")
    gone = http.delete(web.url + "api/v1/silences/csrf-test", timeout=10)
    assert_error(gone, 403, "x-csrf-token")
    assert all(
        s["pattern"] != "csrf-test" for s in get(http, web, "api/v1/silences").json()["silences"]
    )


def test_a_script_with_a_bearer_header_needs_no_csrf_token(
    http: requests.Session, web: WebServer
) -> None:
    headers = {"Authorization": "Bearer anything"}
    made = http.post(
        web.url + "api/v1/silences",
        json={"key": "bearer-test", "duration": "1m"},
        headers=headers,
        timeout=10,
    )
    assert made.status_code == 201 and made.json()["created_by"] == "local"
    assert http.delete(web.url + "api/v1/silences/bearer-test", headers=headers, timeout=10).ok


def test_cross_origin_requests_refused(http: requests.Session, web: WebServer) -> None:
    token = csrf(http, web)
    for origin in ("http://evil.example", "null", web.url.replace("http:", "https:")[:-1]):
        headers = {"Origin": origin, "X-CSRF-Token": token, "Authorization": "Bearer x"}
        response = http.post(
            web.url + "api/v1/silences",
            json={"key": "cors-test", "duration": "1h"},
            headers=headers,
            timeout=10,
        )
        assert_error(response, 403, "Origin")
        assert "access-control-allow-origin" not in response.headers
        assert_error(get(http, web, "api/v1/summary", headers={"Origin": origin}), 403, "Origin")
    same = {"Origin": web.url[:-1], "X-CSRF-Token": token}
    made = http.post(
        web.url + "api/v1/silences",
        json={"key": "cors-test", "duration": "1h"},
        headers=same,
        timeout=10,
    )
    assert made.status_code == 201
    assert http.delete(web.url + "api/v1/silences/cors-test", headers=same, timeout=10).ok
    preflight = http.options(
        web.url + "api/v1/silences",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert preflight.status_code >= 400
    assert not any(h.startswith("access-control-") for h in preflight.headers)


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{8350}", "127.0.0.2", ""])
def test_foreign_host_refused(http: requests.Session, web: WebServer, host: str) -> None:
    for path in ("", "api/v1/summary", "metrics"):
        response = get(http, web, path, headers={"Host": host})
        assert_error(response, 400, "Host")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"])
def test_loopback_hosts_allowed(http: requests.Session, web: WebServer, host: str) -> None:
    assert get(http, web, "api/v1/health", headers={"Host": f"{host}:{web.port}"}).ok


def test_page_security_headers_and_contract_ids(http: requests.Session, web: WebServer) -> None:
    page = get(http, web, "")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    needles = ['id="alerts"', 'id="endpoints"', 'id="payments"', 'id="queues"',
               'id="health"', 'id="silences"', 'id="silence-form"', 'name="key"',
               'name="duration"', 'name="reason"', 'data-sort="p95_response_time"']  # fmt: skip
    for needle in needles:
        assert needle in page.text
    assert "<script>" not in page.text and " on" not in page.text.replace(" one", "")
    for name in ("app.js", "app.css", "login.js", "favicon.svg"):
        assert get(http, web, "static/" + name).ok
    assert_error(get(http, web, "static/../web.py"), 404, None)
    assert get(http, web, "static/index.html").status_code == 404


def test_non_loopback_bind_without_tokens_refuses_to_start(
    seeded: tuple[Settings, dict[str, Any]],
) -> None:
    env = env_for(seeded[0])
    for host in ("0.0.0.0", "192.0.2.10", "::"):
        done = subprocess.run(
            [sys.executable, "-m", "monitor_worker.cli", "web", "--host", host, "--port", "18"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "MONITOR_WEB_TOKENS" in lines[0], done.stderr


def test_a_taken_port_is_reported(seeded: tuple[Settings, dict[str, Any]], web: WebServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor_worker.cli", "web", "--port", str(web.port)],
        env=env_for(seeded[0]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and str(web.port) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- /metrics --------------------------------------------------------------------------------------

COUNTERS = {
    "monitor_requests": {"endpoint"},
    "monitor_request_errors": {"endpoint"},
    "monitor_payment_failures": {"reason"},
    "monitor_alert_deliveries": {"outcome"},
}
GAUGES = {
    "monitor_window_requests": {"endpoint"},
    "monitor_window_error_ratio": {"endpoint"},
    "monitor_window_response_time_avg_seconds": {"endpoint"},
    "monitor_window_response_time_p95_seconds": {"endpoint"},
    "monitor_queue_length": {"queue"},
    "monitor_queue_growth_per_minute": {"queue"},
    "monitor_alert_firing": {"key"},
    "monitor_outbox_depth": set(),
    "monitor_pending_events": set(),
    "monitor_heartbeat_age_seconds": {"process"},
    **{
        f"monitor_task_{name}": {"task"}
        for name in (
            "runs",
            "failures",
            "retries",
            "failure_ratio",
            "runtime_avg_seconds",
            "runtime_p95_seconds",
            "wait_avg_seconds",
            "wait_p95_seconds",
        )
    },
    **{
        f"monitor_task_queue_{name}": {"queue"}
        for name in ("runs", "wait_avg_seconds", "wait_p95_seconds")
    },
    **{
        f"monitor_db_{name}": {"alias"}
        for name in ("queries", "query_errors", "query_time_avg_seconds", "query_time_p95_seconds")
    },
    **{f"monitor_cache_{name}": {"alias"} for name in ("lookups", "hits", "hit_ratio")},
    **{
        f"monitor_metric_{name}": {"name"}
        for name in ("count", "avg", "p95", "max", "ok", "ok_ratio")
    },
    "monitor_window_queries_avg": {"endpoint"},
    "monitor_window_queries_p95": {"endpoint"},
}


def scrape(http: requests.Session, web: WebServer) -> dict[str, Any]:
    response = get(http, web, "metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def values(family: Any, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in family.samples if s.name.endswith("_total")}


def test_metrics_names_types_and_labels(http: requests.Session, web: WebServer) -> None:
    families = scrape(http, web)
    for name, labels in {**COUNTERS, **GAUGES}.items():
        family = families[name]
        assert family.type == ("counter" if name in COUNTERS else "gauge"), name
        for sample in family.samples:
            assert set(sample.labels) == labels, (name, sample)
            assert sample.timestamp is None
    assert set(families) == set(COUNTERS) | set(GAUGES)
    window = {s.labels["endpoint"]: s.value for s in families["monitor_window_error_ratio"].samples}
    assert window[ERROR_ENDPOINT] == pytest.approx(0.5)
    assert values(families["monitor_requests"], "endpoint")[XSS_ENDPOINT] == 40
    firing = {s.labels["key"] for s in families["monitor_alert_firing"].samples}
    assert "slow_response:" + SLOW_ENDPOINT in firing
    queue = {s.labels["queue"]: s.value for s in families["monitor_queue_length"].samples}
    assert queue[MEASURED_QUEUE] == 150
    assert values(families["monitor_alert_deliveries"], "outcome")["sent"] >= 3


def gauge(families: dict[str, Any], name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in families[name].samples}


def test_metrics_of_tasks_databases_caches_and_custom_metrics(
    http: requests.Session, web: WebServer
) -> None:
    families = scrape(http, web)
    assert gauge(families, "monitor_task_runs", "task") == {TASK: 12}
    assert gauge(families, "monitor_task_retries", "task") == {TASK: 1}
    assert gauge(families, "monitor_task_failure_ratio", "task")[TASK] == pytest.approx(1 / 12)
    assert gauge(families, "monitor_task_queue_runs", "queue") == {"billing": 12}
    assert gauge(families, "monitor_task_wait_p95_seconds", "task")[TASK] == pytest.approx(
        12.0, rel=0.01
    )
    assert gauge(families, "monitor_db_queries", "alias") == {"default": 20}
    assert gauge(families, "monitor_db_query_errors", "alias") == {"default": 1}
    assert gauge(families, "monitor_cache_hit_ratio", "alias") == {"sessions": pytest.approx(0.7)}
    assert gauge(families, "monitor_metric_count", "name") == {
        "pdf.render_seconds": 4,
        XSS_METRIC: 1,
        "email.sent": 2,
    }
    assert gauge(families, "monitor_metric_ok_ratio", "name") == {"email.sent": 0.5}
    assert set(gauge(families, "monitor_metric_p95", "name")) == {"pdf.render_seconds", XSS_METRIC}


def test_metrics_counters_are_monotonic_across_scrapes(
    http: requests.Session, web: WebServer, seeded: tuple[Settings, dict[str, Any]]
) -> None:
    before = scrape(http, web)
    monitor = MetricsMonitor(settings=seeded[0])
    for i in range(25):
        monitor.track_api_request(ERROR_ENDPOINT, 0.1, 500 if i < 5 else 200)
    monitor.track_payment_failure("Card declined", 10)
    assert monitor.flush(10)
    monitor.aggregate()
    monitor.close()
    after = scrape(http, web)
    for name, label in (("monitor_requests", "endpoint"), ("monitor_payment_failures", "reason")):
        old, new = values(before[name], label), values(after[name], label)
        assert all(new[k] >= v for k, v in old.items()), name
    requests_ = values(after["monitor_requests"], "endpoint")[ERROR_ENDPOINT]
    assert requests_ - values(before["monitor_requests"], "endpoint")[ERROR_ENDPOINT] == 25
    errors = values(after["monitor_request_errors"], "endpoint")[ERROR_ENDPOINT]
    assert errors - values(before["monitor_request_errors"], "endpoint")[ERROR_ENDPOINT] == 5
    failures = values(after["monitor_payment_failures"], "reason")["Card declined"]
    assert failures - values(before["monitor_payment_failures"], "reason")["Card declined"] == 1


def test_metrics_openmetrics_negotiated(http: requests.Session, web: WebServer) -> None:
    accept = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    response = get(http, web, "metrics", headers={"Accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(response.text)}
    assert families["monitor_requests"].type == "counter"
    assert all(s.timestamp is None for f in families.values() for s in f.samples)


# -- the OpenAPI document against the running server---------------------------------------


def test_openapi_document_holds_against_the_server(web: WebServer) -> None:
    schema = schemathesis.openapi.from_url(web.url + "api/v1/openapi.json")
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10
    for operation in operations:
        modes = [schemathesis.GenerationMode.POSITIVE]
        raw = operation.definition.raw
        if "requestBody" in raw or any(p["in"] == "query" for p in raw.get("parameters", [])):
            modes.append(schemathesis.GenerationMode.NEGATIVE)  # something to get wrong
        for mode in modes:

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=15,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            def conforms(case: Any) -> None:
                case.call_and_validate(
                    base_url=web.url.rstrip("/"),
                    headers={"Authorization": "Bearer schemathesis"},
                    checks=checks,
                )

            conforms()


# -- the store down ----------------------------------------------------------------------------


def test_store_unreachable_answers_503(seeded: tuple[Settings, dict[str, Any]]) -> None:
    dead = seeded[0].with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with WebServer(env_for(dead)) as down, requests.Session() as http:
        paths = ("summary", "series?endpoint=*", "alerts", "silences", "queues", "health")
        for path in (*paths, "history?since=1000"):
            response = http.get(down.url + "api/v1/" + path, timeout=30)
            assert_error(response, 503, None)
            assert "unreachable" in response.json()["error"]
        response = http.post(
            down.url + "api/v1/silences",
            json={"key": "k", "duration": "1h"},
            headers={"Authorization": "Bearer x"},
            timeout=30,
        )
        assert_error(response, 503, None)
        assert http.get(down.url + "metrics", timeout=30).status_code == 503
        session = http.get(down.url + "api/v1/session", timeout=30)  # needs no store
        assert session.ok
        # the page marks an endpoint over a threshold only from the rules' minimum on
        assert session.json()["thresholds"]["min_requests"] == dead.min_requests
