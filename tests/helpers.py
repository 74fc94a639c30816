"""Small helpers shared by tests: polling with a deadline, summaries to feed the rules."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from monitor_worker.windows import Window

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll until ``predicate()`` is truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(interval)
        value = predicate()
    return value


def endpoint_stats(
    total: int = 100, errors: int = 0, fast: int | None = None, p95: float = 0.2
) -> dict[str, Any]:
    """One endpoint's entry of a summary's ``api``; ``fast`` requests at or below the
    threshold (default: all)."""
    return {
        "total_requests": total,
        "error_count": errors,
        "error_rate": 100.0 * errors / total if total else 0.0,
        "avg_response_time": 0.1,
        "p95_response_time": p95,
        "at_or_below_threshold": total if fast is None else fast,
    }


def summary(now: float, **parts: Any) -> dict[str, Any]:
    """An empty window's summary ending at ``now``, with ``parts`` replacing its sections."""
    return Window().summary(now, 3600) | parts


def self_signed(common_name: str, cert: Path, key: Path) -> None:
    """A throw-away self-signed CA certificate for ``common_name`` (an IP gets a SAN too)."""
    san = ["-addext", f"subjectAltName=IP:{common_name}"] if common_name[0].isdigit() else []
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={common_name}", *san, "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
