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
    lines += [
        "",
        f"pending events: {summary['pending_events']}  dropped: {summary['dropped_events']}"
        f"  folded: {summary['endpoints_folded']} requests, "
        f"{summary.get('reasons_folded', 0)} payment failures",
    ]
    return "\n".join(lines) + "\n"


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
    return "\n".join(lines) + "\n"
