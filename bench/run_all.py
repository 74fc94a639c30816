"""Run every benchmark (``--quick`` passed through) and print one table of their figures,
with the goals and PASS/FAIL marks. Each script runs in its own process and prints its own
tables first. Exit status 1 when a script failed or one of its correctness checks did.

    .venv/bin/python bench/run_all.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as common

SCRIPTS = (
    "track_cost",
    "end_to_end",
    "burst",
    "summary_speed",
    "seed_baseline",
    "profile_pipeline",
    "queue_inspection",
    "alert_latency",
    "web",
    "hook_cost",
    "history",
)
FULL_LIMIT_S = 15 * 60


def main() -> int:
    args = common.parse_args(__doc__ or "")
    here = Path(__file__).resolve().parent
    rows: list[tuple[str, str, str, str, str]] = []
    broken = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mwbench-") as tmp:
        for name in SCRIPTS:
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, str(here / f"{name}.py"), "--figures", str(out)]
            if args.quick:
                command.append("--quick")
            print(f"\n===== {name} {'(quick)' if args.quick else ''}", flush=True)
            t0 = time.monotonic()
            try:
                code = subprocess.run(
                    command, timeout=600 if args.quick else FULL_LIMIT_S
                ).returncode
            except subprocess.TimeoutExpired:
                code = -1
            elapsed = time.monotonic() - t0
            data = json.loads(out.read_text()) if out.exists() else None
            if data is None or code != 0:
                broken += 1
                why = "; ".join(data["failures"]) if data and data["failures"] else f"exit {code}"
                rows.append((name, "run", f"FAILED: {why}"[:70], "", "FAIL"))
            for f in data["figures"] if data else []:
                rows.append((name, f["name"], f["value"], f["goal"], common.mark(f["ok"])))
            rows.append((name, "time", f"{elapsed:.0f} s", "", ""))
    total = time.monotonic() - started
    limit_ok = None if args.quick else total < FULL_LIMIT_S
    rows.append(("all", "total time", f"{total / 60:.1f} min", "< 15 min", common.mark(limit_ok)))
    print("\n" + "=" * 100)
    common.print_table(
        f"monitor-worker benchmarks ({'quick' if args.quick else 'full'} run)",
        ("script", "figure", "value", "goal", ""),
        rows,
        left=2,
    )
    failed_goals = sum(1 for r in rows if r[4] == "FAIL")
    print(f"\n{failed_goals} mark(s) FAIL, {broken} script(s) broken")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
