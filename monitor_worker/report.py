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
