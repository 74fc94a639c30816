"""The OpenAPI 3.1 document of ``/api/v1``: the contract the API is tested against."""

from __future__ import annotations

from typing import Any

NUM = {"type": "number"}
INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
NULL_NUM = {"type": ["number", "null"]}
NULL_STR = {"type": ["string", "null"]}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def _map(values: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": values}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STR, "parameter": NULL_STR}),
    "EndpointStats": _obj(
        {
            "total_requests": INT,
            "error_count": INT,
            "error_rate": NUM,
            "avg_response_time": NUM,
            "p95_response_time": NULL_NUM,
            "at_or_below_threshold": INT,
        },
        {"avg_queries": NUM, "p95_queries": NULL_NUM},  # where a database hook counts them
    ),
    "TaskStats": _obj(
        {
            "runs": INT,
            "failures": INT,
            "failure_rate": NUM,
            "retries": INT,
            "avg_runtime": NULL_NUM,
            "p95_runtime": NULL_NUM,
            "avg_queue_wait": NULL_NUM,
            "p95_queue_wait": NULL_NUM,
            "queue": NULL_STR,
        }
    ),
    "TaskQueueStats": _obj({"tasks": INT, "avg_queue_wait": NULL_NUM, "p95_queue_wait": NULL_NUM}),
    "DbStats": _obj(
        {"queries": INT, "errors": INT, "avg_query_time": NULL_NUM, "p95_query_time": NULL_NUM}
    ),
    "CacheStats": _obj({"lookups": INT, "hits": INT, "hit_rate": NUM}),
    "MetricStats": {
        "oneOf": [
            _obj(
                {
                    "kind": {"const": "value"},
                    "count": INT,
                    "avg": NULL_NUM,
                    "p95": NULL_NUM,
                    "max": NULL_NUM,
                }
            ),
            _obj({"kind": {"const": "ratio"}, "count": INT, "ok": INT, "ok_rate": NUM}),
        ]
    },
    "Queue": _obj(
        {
            "length": INT,
            "exists": {"type": "boolean"},
            "checked_at": NUM,
            "growth_per_minute": NULL_NUM,
            "drain_eta_seconds": NULL_NUM,
            "growing": {"type": "boolean"},
        },
        {"age_s": NUM, "priorities": _map(INT)},
    ),
    "Broker": {
        "type": ["object", "null"],
        "properties": {"reachable": {"type": "boolean"}, "error": NULL_STR, "broker": STR},
    },
    "Summary": _obj(
        {
            "generated_at": NUM,
            "timestamp": NUM,
            "window_seconds": INT,
            "api": _map(_ref("EndpointStats")),
            "payments": _obj(
                {
                    "failures_last_hour": INT,
                    "by_reason": _map(INT),
                    "amount_total": NUM,
                    "amount_by_reason": _map(NUM),
                }
            ),
            "tasks": _map(_ref("TaskStats")),
            "task_queues": _map(_ref("TaskQueueStats")),
            "db": _map(_ref("DbStats")),
            "cache": _map(_ref("CacheStats")),
            "metrics": _map(_ref("MetricStats")),
            "celery": _map(_ref("Queue")),
            "queue_broker": _ref("Broker"),
            "pending_events": INT,
            "pending_unread": INT,
            "dropped_events": _map(INT),
            "endpoints_folded": INT,
            "reasons_folded": INT,
        }
    ),
    # an endpoint's points over time: the window's minutes (series) or history's steps
    "EndpointPoints": {
        "type": "array",
        "items": _obj(
            {
                "t": INT,
                "requests": INT,
                "errors": INT,
                "error_rate": NUM,
                "avg_response_time": NUM,
                "p95_response_time": NULL_NUM,
            }
        ),
    },
    "Series": _obj(
        {
            "generated_at": NUM,
            "step_seconds": INT,
            "series": _map(_ref("EndpointPoints")),
            "payments": {"type": "array", "items": _obj({"t": INT, "failures": INT})},
        }
    ),
    "Alerts": _obj(
        {
            "generated_at": NUM,
            "firing": {
                "type": "array",
                "items": _obj(
                    {
                        "key": STR,
                        "since": NUM,
                        "last_sent": NULL_NUM,
                        "throttled_until": NULL_NUM,
                        "last_value": NULL_NUM,
                        "delivered": {"type": "boolean"},
                        "silenced": NULL_STR,
                    }
                ),
            },
            "deliveries": {
                "type": "array",
                "maxItems": 100,
                "items": _obj(
                    {
                        "t": NUM,
                        "key": STR,
                        "kind": {"enum": ["firing", "resolved"]},
                        "outcome": {"enum": ["sent", "retrying", "dropped"]},
                        "error": NULL_STR,
                    },
                    {"attempts": INT},
                ),
            },
            "delivery_totals": _map(INT),
        }
    ),
    "Silence": _obj(
        {"pattern": STR, "reason": STR, "until": NUM, "created": NUM, "created_by": STR}
    ),
    "SilenceRequest": _obj(
        {
            "key": {**STR, "description": "an alert key, or a prefix ending in *"},
            "duration": {**STR, "description": "30s, 15m, 2h, 1d"},
        },
        {"reason": STR},
    ),
    "Silences": _obj(
        {"generated_at": NUM, "silences": {"type": "array", "items": _ref("Silence")}}
    ),
    "Queues": _obj({"generated_at": NUM, "queues": _map(_ref("Queue")), "broker": _ref("Broker")}),
    "Health": _obj(
        {
            "generated_at": NUM,
            "healthy": {"type": "boolean"},
            "worker_seen_s_ago": NULL_NUM,
            "beat_seen_s_ago": NULL_NUM,
            "pending_events": INT,
            "outbox": INT,
            "outbox_oldest_s": NULL_NUM,
            "last_slack_error": {
                "type": ["object", "null"],
                "properties": {"t": NUM, "key": STR, "error": STR},
            },
        }
    ),
    "Session": _obj(
        {
            "user": STR,
            "auth": {"enum": ["bearer", "cookie", "loopback"]},
            "csrf_token": STR,
            "tokens_required": {"type": "boolean"},
            "thresholds": _map(NUM),
        },
        {"history": _obj({"minutes_retention_s": NUM, "hours_retention_s": NUM})},
    ),
    "History": _obj(
        {
            "generated_at": NUM,
            "step_seconds": INT,
            "gaps": {
                "type": "array",
                "items": {"type": "array", "items": INT, "minItems": 2, "maxItems": 2},
            },
            "api": _map(_ref("EndpointPoints")),
            "payments": {
                "type": "array",
                "items": _obj(
                    {
                        "t": INT,
                        "failures": INT,
                        "amount_total": NUM,
                        "by_reason": _map(INT),
                        "amount_by_reason": _map(NUM),
                    }
                ),
            },
            "celery": _map(
                {
                    "type": "array",
                    "items": _obj({"t": INT, "max_length": INT, "last_length": INT}),
                }
            ),
        },
        {  # the other kinds: per name, rows with t and that kind's figures (see README)
            section: _map({"type": "array", "items": _obj({"t": INT})})
            for section in ("tasks", "task_queues", "db", "cache", "metrics")
        },
    ),
}


def _responses(ok: str, status: str = "200", *errors: str) -> dict[str, Any]:
    why = {
        "400": "a bad parameter (named in `parameter`)",
        "401": "a token is required",
        "403": "refused: a foreign Origin or a missing CSRF token",
        "404": "no such silence",
        "503": "the metrics store is unreachable",
    }
    out: dict[str, Any] = {
        status: {"description": "OK", "content": {"application/json": {"schema": _ref(ok)}}}
    }
    for code in ("401", *errors):
        out[code] = {
            "description": why[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return out


def _get(summary: str, ok: str, *errors: str, params: list[Any] | None = None) -> Any:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(ok, "200", *errors)}
    if params:
        op["parameters"] = params
    return {"get": op}


def document() -> dict[str, Any]:
    """The OpenAPI document served at ``/api/v1/openapi.json``."""
    silences = _get("Silences in force", "Silences", "503")
    silences["post"] = {
        "summary": "Silence an alert key or a prefix ending in *; records who made it",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("SilenceRequest")}},
        },
        "responses": _responses("Silence", "201", "400", "403", "503"),
    }
    key_param = {"name": "key", "in": "path", "required": True, "schema": STR}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "monitor-worker",
            "version": "1",
            "description": "The sliding window, alerts, silences, queues and health. With "
            "MONITOR_WEB_TOKENS set, send `Authorization: Bearer <token>`.",
        },
        "paths": {
            "/api/v1/summary": _get(
                "The window (the shape of get_metrics_summary())",
                "Summary",
                "400",
                "503",
                params=[
                    {
                        "name": "now",
                        "in": "query",
                        "required": False,
                        "description": "the window ending at this unix time (default: now)",
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e11},
                    }
                ],
            ),
            "/api/v1/series": _get(
                "Per-minute points of endpoints over the window (minutes without requests "
                "left out), and of payment failures",
                "Series",
                "400",
                "503",
                params=[
                    {
                        "name": "endpoint",
                        "in": "query",
                        "required": True,
                        "description": "an endpoint (repeatable), or * for all",
                        "schema": {"type": "array", "items": STR, "minItems": 1},
                        "style": "form",
                        "explode": True,
                    }
                ],
            ),
            "/api/v1/alerts": _get(
                "Alerts firing now and the last 100 deliveries", "Alerts", "503"
            ),
            "/api/v1/silences": silences,
            "/api/v1/silences/{key}": {
                "delete": {
                    "summary": "Remove the silence on exactly this key or prefix",
                    "parameters": [key_param],
                    "responses": {
                        "200": {
                            "description": "removed",
                            "content": {"application/json": {"schema": _obj({"removed": STR})}},
                        },
                        **{
                            k: v
                            for k, v in _responses("Error", "200", "403", "404", "503").items()
                            if k != "200"
                        },
                    },
                }
            },
            "/api/v1/queues": _get("Broker queues: length, trend, drain estimate", "Queues", "503"),
            "/api/v1/health": _get(
                "Heartbeats, outbox, last Slack error, aggregation backlog", "Health", "503"
            ),
            "/api/v1/session": _get("Who is asking, and the CSRF token of the page", "Session"),
            "/api/v1/history": _get(
                "Archived minutes, hours and days (the shape of get_history()): one row per "
                "step with data, t its start (UTC); gaps are minutes lost before archiving",
                "History",
                "400",
                "503",
                params=[
                    {
                        "name": "since",
                        "in": "query",
                        "required": True,
                        "description": "unix seconds",
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e11},
                    },
                    {
                        "name": "until",
                        "in": "query",
                        "required": False,
                        "description": "unix seconds (default: now)",
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e11},
                    },
                    {
                        "name": "step",
                        "in": "query",
                        "required": False,
                        "description": "1m (minute rows; refused beyond the minute retention), "
                        "1h, 6h or 1d (default 1h)",
                        "schema": {"enum": ["1m", "1h", "6h", "1d"]},
                    },
                    {
                        "name": "endpoint",
                        "in": "query",
                        "required": False,
                        "description": "only this endpoint in api",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                ],
            ),
        },
        "components": {"schemas": SCHEMAS},
    }
