"""Plain-text rendering of a summary for terminals (``summary``, ``demo``)."""

from __future__ import annotations

import time
from typing import Any


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"window: last {summary['window_seconds']} s, at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(summary['timestamp']))}",
        "",
        f"{'endpoint':<40} {'requests':>9} {'errors':>7} {'err %':>7} {'avg s':>8} {'p95 s':>8}",
    ]
    for endpoint, s in summary["api"].items():
        p95 = s["p95_response_time"]
        lines.append(
            f"{endpoint[:40]:<40} {s['total_requests']:>9} {s['error_count']:>7} "
            f"{s['error_rate']:>7.2f} {s['avg_response_time']:>8.3f} "
            f"{(p95 if p95 is not None else 0):>8.3f}"
        )
    if not summary["api"]:
        lines.append("(no requests in the window)")
    counted = {e: s for e, s in summary["api"].items() if "avg_queries" in s}
    if counted:
        lines += ["", f"{'endpoint':<40} {'avg queries':>12} {'p95 queries':>12}"]
        for endpoint, s in counted.items():
            lines.append(
                f"{endpoint[:40]:<40} {s['avg_queries']:>12.1f} {_n(s['p95_queries'], 1):>12}"
            )
    pay = summary["payments"]
    lines += ["", f"payment failures: {pay['failures_last_hour']}  amount: {pay['amount_total']}"]
    for reason, n in list(pay["by_reason"].items())[:10]:
        lines.append(f"  {n:>6}  {reason}")
    if summary["celery"]:
        lines += ["", "queues:"]
        for queue, q in summary["celery"].items():
            growth = q.get("growth_per_minute")
            trend = f"{growth:+.1f}/min" if growth is not None else "n/a"
            lines.append(f"  {queue:<30} length {q['length']:>7}  trend {trend}")
    lines += _kind_tables(summary)
    lines += [
        "",
        f"pending events: {summary['pending_events']}  dropped: {_pairs(summary['dropped_events'])}"
        f"  folded: {summary['endpoints_folded']} requests, "
        f"{summary.get('reasons_folded', 0)} payment failures",
    ]
    return "\n".join(lines) + "\n"


def _pairs(value: Any) -> str:
    """``{"malformed": 0, "too_old": 2}`` as ``malformed=0 too_old=2`` (a number as itself)."""
    if isinstance(value, dict):
        return " ".join(f"{name}={n}" for name, n in value.items()) or "none"
    return str(value)


def _n(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``-`` where unknown."""
    return "-" if value is None else f"{value:.{digits}f}"


# section -> (first column's header, then (header, field, width, format) per column); a format
# is "d" (a count), "%" (a percentage), a number of decimals, or "t" (text, last)
_TABLES: tuple[tuple[str, str, tuple[tuple[str, str, int, str | int], ...]], ...] = (
    ("tasks", "task", (
        ("runs", "runs", 7, "d"), ("fail", "failures", 6, "d"), ("fail %", "failure_rate", 7, "%"),
        ("retry", "retries", 6, "d"), ("avg s", "avg_runtime", 8, 3),
        ("p95 s", "p95_runtime", 8, 3), ("p95 wait", "p95_queue_wait", 9, 3),
        ("queue", "queue", 0, "t"),
    )),
    ("task_queues", "task queue", (
        ("tasks", "tasks", 7, "d"), ("avg wait", "avg_queue_wait", 9, 3),
        ("p95 wait", "p95_queue_wait", 9, 3),
    )),
    ("db", "database", (
        ("queries", "queries", 9, "d"), ("errors", "errors", 7, "d"),
        ("avg s", "avg_query_time", 8, 4), ("p95 s", "p95_query_time", 8, 4),
    )),
    ("cache", "cache", (
        ("lookups", "lookups", 9, "d"), ("hits", "hits", 9, "d"), ("hit %", "hit_rate", 7, "%"),
    )),
)  # fmt: skip


def _cell(value: Any, fmt: str | int) -> str:
    if fmt == "t":
        return f" {value or '-'}"
    if fmt == "d":
        return str(value)
    return _n(value, 2 if fmt == "%" else int(fmt))


def _kind_tables(summary: dict[str, Any]) -> list[str]:
    """Tables of the tasks, task queues, databases, caches and custom metrics (where any)."""
    lines: list[str] = []
    for section, first, columns in _TABLES:
        rows = summary.get(section) or {}
        if not rows:
            continue
        head = " ".join(f"{h:>{w}}" if w else f" {h}" for h, _, w, _ in columns)
        lines += ["", f"{first:<40} {head}"]
        for name, row in rows.items():
            cells = " ".join(f"{_cell(row[k], fmt):>{w}}" for _, k, w, fmt in columns)
            lines.append(f"{name[:40]:<40} {cells}")
    metrics = summary.get("metrics") or {}
    if metrics:
        lines += ["", f"{'metric':<40} {'count':>9}  values"]
        for name, m in metrics.items():
            if m["kind"] == "value":
                shown = f"avg {_n(m['avg'])}  p95 {_n(m['p95'])}  max {_n(m['max'])}"
            else:
                shown = f"ok {m['ok']}  ok rate {m['ok_rate']:.2f} %"
            lines.append(f"{name[:40]:<40} {m['count']:>9}  {shown}")
    return lines


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def format_history(history: dict[str, Any]) -> str:
    """``monitor-worker history``: one table per section, times in UTC."""
    lines = [f"step: {history['step_seconds']} s (times UTC, each the start of its step)"]
    for t0, t1 in history["gaps"]:
        lines.append(f"GAP: {_utc(t0)} - {_utc(t1)}: minutes lost before they were archived")
    head = f"{'t':<16} {'requests':>9} {'errors':>7} {'err %':>7} {'avg s':>8} {'p95 s':>8}"
    for endpoint, rows in history["api"].items():
        lines += ["", f"endpoint {endpoint}", head]
        for r in rows:
            avg, p95 = r["avg_response_time"], r["p95_response_time"]
            lines.append(
                f"{_utc(r['t']):<16} {r['requests']:>9} {r['errors']:>7} {r['error_rate']:>7.2f} "
                f"{(avg or 0):>8.3f} {(p95 if p95 is not None else 0):>8.3f}"
            )
    if not history["api"]:
        lines += ["", "(no requests archived in this range)"]
    if history["payments"]:
        lines += ["", f"{'t':<16} {'failures':>9} {'amount':>12}  payment failures"]
        for r in history["payments"]:
            lines.append(f"{_utc(r['t']):<16} {r['failures']:>9} {r['amount_total']:>12}")
    for queue, rows in history["celery"].items():
        lines += ["", f"queue {queue}", f"{'t':<16} {'max':>9} {'last':>9}"]
        for r in rows:
            lines.append(f"{_utc(r['t']):<16} {r['max_length']:>9} {r['last_length']:>9}")
    for section in ("tasks", "task_queues", "db", "cache", "metrics"):
        for name, rows in (history.get(section) or {}).items():
            keys = [k for k in rows[0] if k not in ("t", "kind")] if rows else []
            lines += ["", f"{section} {name}", f"{'t':<16} " + " ".join(f"{k:>14}" for k in keys)]
            for r in rows:
                cells = " ".join(
                    f"{_n(r[k], 3) if isinstance(r[k], float) else r[k]:>14}" for k in keys
                )
                lines.append(f"{_utc(r['t']):<16} {cells}")
    return "\n".join(lines) + "\n"
