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
        f"pending events: {summary['pending_events']}  dropped: {summary['dropped_events']}"
        f"  endpoints folded: {summary['endpoints_folded']}",
    ]
    return "\n".join(lines) + "\n"


def _n(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``-`` where unknown."""
    return "-" if value is None else f"{value:.{digits}f}"


def _kind_tables(summary: dict[str, Any]) -> list[str]:
    """Tables of the tasks, task queues, databases, caches and custom metrics (where any)."""
    lines: list[str] = []
    tasks = summary.get("tasks") or {}
    if tasks:
        lines += [
            "",
            f"{'task':<40} {'runs':>7} {'fail':>6} {'fail %':>7} {'retry':>6} {'avg s':>8} "
            f"{'p95 s':>8} {'p95 wait':>9}  queue",
        ]
        for name, t in tasks.items():
            lines.append(
                f"{name[:40]:<40} {t['runs']:>7} {t['failures']:>6} {t['failure_rate']:>7.2f} "
                f"{t['retries']:>6} {_n(t['avg_runtime']):>8} {_n(t['p95_runtime']):>8} "
                f"{_n(t['p95_queue_wait']):>9}  {t['queue'] or '-'}"
            )
    queues = summary.get("task_queues") or {}
    if queues:
        lines += ["", f"{'task queue':<40} {'tasks':>7} {'avg wait':>9} {'p95 wait':>9}"]
        for name, q in queues.items():
            lines.append(
                f"{name[:40]:<40} {q['tasks']:>7} {_n(q['avg_queue_wait']):>9} "
                f"{_n(q['p95_queue_wait']):>9}"
            )
    db = summary.get("db") or {}
    if db:
        lines += ["", f"{'database':<40} {'queries':>9} {'errors':>7} {'avg s':>8} {'p95 s':>8}"]
        for alias, d in db.items():
            lines.append(
                f"{alias[:40]:<40} {d['queries']:>9} {d['errors']:>7} "
                f"{_n(d['avg_query_time'], 4):>8} {_n(d['p95_query_time'], 4):>8}"
            )
    cache = summary.get("cache") or {}
    if cache:
        lines += ["", f"{'cache':<40} {'lookups':>9} {'hits':>9} {'hit %':>7}"]
        for alias, c in cache.items():
            lines.append(f"{alias[:40]:<40} {c['lookups']:>9} {c['hits']:>9} {c['hit_rate']:>7.2f}")
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
