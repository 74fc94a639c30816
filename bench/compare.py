"""Before/after: run one benchmark script against the package of an earlier commit and against
this tree's, interleaved (before, after, after, before, ...), and print the median of every
figure for each side and their ratio.

    .venv/bin/python bench/compare.py --before REV [--runs 5] SCRIPT [SCRIPT ARGS...]
    .venv/bin/python bench/compare.py --before d05370e --runs 5 bench/burst.py

The script itself is this tree's in both cases; only ``monitor_worker`` differs (the earlier
one is taken with ``git archive`` and put first on ``PYTHONPATH``, which child processes such
as the ``monitor-worker`` command inherit). So the script must use only what both versions
have.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import _common as common

NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def value_of(text: str) -> float | None:
    found = NUMBER.search(text)
    return float(found.group().replace(",", "")) if found else None


def export(rev: str, into: Path) -> None:
    """The ``monitor_worker`` package of ``rev`` under ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "monitor_worker"], check=True, capture_output=True
    ).stdout
    tar_path = into / "before.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    values: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="mwcompare-") as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        export(args.before, old)
        for run in range(args.runs):
            sides = ("before", "after") if run % 2 == 0 else ("after", "before")
            for side in sides:
                env = dict(os.environ)
                if side == "before":
                    env["PYTHONPATH"] = os.pathsep.join(
                        filter(None, [str(old), env.get("PYTHONPATH")])
                    )
                out = Path(tmp) / f"{side}-{run}.json"
                command = [sys.executable, args.script, "--figures", str(out), *args.args]
                print(f"===== run {run + 1}/{args.runs}: {side}", flush=True)
                code = subprocess.run(command, env=env).returncode
                data = json.loads(out.read_text()) if out.exists() else {"figures": []}
                failed += code != 0
                for fig in data["figures"]:
                    number = value_of(fig["value"])
                    if number is not None:
                        values[side].setdefault(fig["name"], []).append(number)
    rows = []
    for name, after in values["after"].items():
        before = values["before"].get(name, [])
        b = common.median(before) if before else None
        a = common.median(after)
        ratio = f"{a / b:.2f}" if b else ""
        rows.append((name, f"{b:,.2f}" if b is not None else "", f"{a:,.2f}", ratio, len(after)))
    common.print_table(
        f"{Path(args.script).name}: medians, before = {args.before}, after = this tree",
        ("figure", "before", "after", "after / before", "runs"),
        rows,
    )
    if failed:
        print(f"\n{failed} run(s) exited non-zero (a correctness check failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
