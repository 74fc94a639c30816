"""Event validation and the compact raw-list encoding.

An event is one line, the free-text field last (with ``\\`` and newlines escaped)::

    a|<ts>|<response_time_s>|<status_code>|<endpoint>     an API request
    p|<ts>|<amount>|<reason>                              a payment failure
    o|<ts>|<count>                                        events dropped by a full app buffer
    t|<ts>|<outcome>|<runtime_s>|<wait_s>|<n>|<queue><task>  a Celery task attempt (below)
    d|<ts>|<duration_s>|<ok>|<alias>                      a database query (ok: 1, failed: 0)
    k|<ts>|<lookups>|<hits>|<alias>                       one call to a cache
    v|<ts>|<value>|<name>                                 a custom value metric
    r|<ts>|<ok>|<name>                                    a custom success/failure event
    n|<ts>|<queries>|<endpoint>                           database queries of one API request

A task attempt's outcome is ``s`` (success), ``f`` (failure) or ``r`` (retry); runtime and
wait are empty where unknown; ``<n>`` is the length in bytes of the escaped queue name that
the task name follows.

A flush pushes one raw-list element per shard, ``b|<count>`` and then one event per line, so
a batch costs one list element however many events it holds. Numbers are written with
``repr`` so they round-trip exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

MAX_NAME_LEN = 200
API = "a"
PAYMENT = "p"
OVERFLOW = "o"


# Upper bounds keep every stored sum finite and every entry small.
MAX_RESPONSE_TIME_S = 1e6
MAX_AMOUNT = 1e15
MAX_METRIC_VALUE = 1e15
MAX_COUNT = 2**31  # queries of one request, keys of one cache call
TASK = "t"
QUERY = "d"
CACHE = "k"
VALUE = "v"
RATIO = "r"
QUERIES = "n"
TASK_OUTCOMES = ("s", "f", "r")  # success, failure, retry


def _shown(value: Any) -> str:
    """A short, always-printable rendering of a rejected value."""
    try:
        text = repr(value)
    except ValueError:  # ints too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _name(value: Any, arg: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be a str, not {type(value).__name__}")
    name = str.__str__(value)  # the checked value itself, never a subclass's __str__
    if not name:
        raise ValueError(f"{arg} must be a non-empty str")
    if len(name) > MAX_NAME_LEN:
        raise ValueError(f"{arg} must be at most {MAX_NAME_LEN} characters (got {len(name)})")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{arg} must be valid text (it holds an unpaired surrogate)") from None
    return name


def _number(value: Any, arg: str, limit: float, *, allow_decimal: bool = False) -> float:
    ok = isinstance(value, (int, float)) or (allow_decimal and isinstance(value, Decimal))
    if isinstance(value, bool) or not ok:
        wanted = "an int, float or Decimal" if allow_decimal else "an int or float"
        raise TypeError(f"{arg} must be {wanted}, not {type(value).__name__}")
    try:
        number = float(value)
    except (OverflowError, ValueError):
        raise ValueError(f"{arg} must be a finite number (got {_shown(value)})") from None
    if not math.isfinite(number):
        raise ValueError(f"{arg} must be finite (got {_shown(value)})")
    if not 0 <= number <= limit:
        raise ValueError(f"{arg} must be between 0 and {limit:g} (got {_shown(value)})")
    return number


def check_timestamp(value: Any) -> float:
    """A unix time in seconds; ``timestamp`` names the argument in errors."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timestamp must be an int or float, not {type(value).__name__}")
    try:
        ts = float(value)
    except OverflowError:
        ts = math.inf
    if not math.isfinite(ts) or ts <= 0 or ts >= 1e11:
        raise ValueError(f"timestamp must be a unix time in seconds (got {_shown(value)})")
    return ts


def check_api(endpoint: Any, response_time: Any, status_code: Any) -> tuple[str, float, int]:
    """Validate one API request; errors name the argument. The slow path of tracking."""
    endpoint = _name(endpoint, "endpoint")
    rt = _number(response_time, "response_time", MAX_RESPONSE_TIME_S)
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise TypeError(f"status_code must be an int, not {type(status_code).__name__}")
    if not 100 <= status_code <= 599:
        raise ValueError(f"status_code must be in 100-599 (got {_shown(status_code)})")
    return endpoint, rt, int(status_code)


def check_payment(reason: Any, amount: Any) -> tuple[str, float]:
    """Validate one payment failure; the amount becomes a float (sums are floats anyway)."""
    return _name(reason, "reason"), _number(amount, "amount", MAX_AMOUNT, allow_decimal=True)


def escape_name(name: str) -> str:
    """Names end a line, so a newline (and the escape character) is escaped."""
    if "\\" in name or "\n" in name:
        return name.replace("\\", "\\\\").replace("\n", "\\n")
    return name


def api_lines(items: Iterable[tuple[Any, float, str, float, int]]) -> list[str]:
    """Lines of ``(kind, ts, escaped endpoint, response_time_s, status_code)`` items (one
    comprehension for a whole flush: the flusher's main cost)."""
    return [f"a|{ts!r}|{rt!r}|{status}|{name}" for _, ts, name, rt, status in items]


def api_line(ts: float, escaped_endpoint: str, response_time_s: float, status_code: int) -> str:
    return api_lines([("a", ts, escaped_endpoint, response_time_s, status_code)])[0]


def payment_line(ts: float, escaped_reason: str, amount: float) -> str:
    return f"p|{ts!r}|{amount!r}|{escaped_reason}"


def overflow_line(ts: float, count: int) -> str:
    return f"o|{ts!r}|{count}"


def encode_chunk(lines: list[str]) -> bytes:
    """One raw-list element holding many events: ``b|<count>`` then one event per line."""
    return f"b|{len(lines)}\n{chr(10).join(lines)}".encode()


def element_lines(element: bytes) -> list[bytes]:
    """The event lines of one raw-list element: a chunk's lines, else the element itself."""
    return element.split(b"\n")[1:] if element[:2] == b"b|" else [element]


def element_count(element: bytes) -> int:
    """Events in one raw-list element: a chunk's header count, else one."""
    if element[:2] == b"b|":
        head = element[2 : element.find(b"\n")]
        if head.isdigit():
            return int(head)
    return 1


def encode_api(ts: float, endpoint: str, response_time_s: float, status_code: int) -> bytes:
    """A single event as its own raw-list element (the aggregator reads both forms)."""
    return api_line(ts, escape_name(endpoint), response_time_s, status_code).encode()


def encode_payment(ts: float, reason: str, amount: float) -> bytes:
    return payment_line(ts, escape_name(reason), amount).encode()


def encode_overflow(ts: float, count: int) -> bytes:
    return overflow_line(ts, count).encode()


# -- the kinds beyond requests and payments: validation, one line encoder and parser each -----


def check_flag(value: Any, arg: str) -> bool:
    """A bool argument (``hit``, ``ok``): anything else is a TypeError naming it."""
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be a bool, not {type(value).__name__}")
    return value


def check_count(value: Any, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{arg} must be between 0 and {MAX_COUNT} (got {_shown(value)})")
    return int(value)


def check_task(
    task: Any, outcome: Any, runtime: Any, queue_wait: Any, queue: Any
) -> tuple[str, str, float | None, float | None, str]:
    """Validate one task attempt; runtime and queue_wait may be None (unknown)."""
    name = _name(task, "task")
    if outcome not in TASK_OUTCOMES:
        raise ValueError(
            f"outcome must be one of {', '.join(TASK_OUTCOMES)} (got {_shown(outcome)})"
        )
    rt = None if runtime is None else _number(runtime, "runtime", MAX_RESPONSE_TIME_S)
    wait = None if queue_wait is None else _number(queue_wait, "queue_wait", MAX_RESPONSE_TIME_S)
    return name, outcome, rt, wait, "" if queue is None or queue == "" else _name(queue, "queue")


def check_query(alias: Any, duration: Any, ok: Any) -> tuple[str, float, bool]:
    return (
        _name(alias, "alias"),
        _number(duration, "duration", MAX_RESPONSE_TIME_S),
        check_flag(ok, "ok"),
    )


def check_metric(name: Any, value: Any) -> tuple[str, float]:
    return _name(name, "name"), _number(value, "value", MAX_METRIC_VALUE)


def _opt(value: float | None) -> str:
    return "" if value is None else repr(value)


def task_line(
    ts: float, escaped_task: str, outcome: str, runtime_s: float | None, wait_s: float | None,
    queue: str,
) -> str:  # fmt: skip
    q = escape_name(queue)
    return (
        f"t|{ts!r}|{outcome}|{_opt(runtime_s)}|{_opt(wait_s)}|{len(q.encode())}|{q}{escaped_task}"
    )


def query_line(ts: float, escaped_alias: str, duration_s: float, ok: bool) -> str:
    return f"d|{ts!r}|{duration_s!r}|{int(ok)}|{escaped_alias}"


def cache_line(ts: float, escaped_alias: str, lookups: int, hits: int) -> str:
    return f"k|{ts!r}|{lookups}|{hits}|{escaped_alias}"


def value_line(ts: float, escaped_name: str, value: float) -> str:
    return f"v|{ts!r}|{value!r}|{escaped_name}"


def ratio_line(ts: float, escaped_name: str, ok: bool) -> str:
    return f"r|{ts!r}|{int(ok)}|{escaped_name}"


def queries_line(ts: float, escaped_endpoint: str, queries: int) -> str:
    return f"n|{ts!r}|{queries}|{escaped_endpoint}"


# buffered item kind -> line encoder of (ts, escaped name, *the item's other fields)
LINE_OF_KIND: dict[str, Any] = {
    PAYMENT: payment_line,
    TASK: task_line,
    QUERY: query_line,
    CACHE: cache_line,
    VALUE: value_line,
    RATIO: ratio_line,
    QUERIES: queries_line,
}


def _opt_number(raw: bytes) -> float | None:
    return None if raw == b"" else float(raw)


def parse_task(line: bytes) -> tuple[float, bytes, float | None, float | None, bytes, bytes]:
    """(ts, outcome, runtime_s, wait_s, raw queue, raw task) of a ``t|`` line."""
    _, ts_b, outcome, rt_b, wait_b, qlen_b, rest = line.split(b"|", 6)
    qlen = int(qlen_b)
    if not 0 <= qlen < len(rest) or outcome not in (b"s", b"f", b"r"):
        raise ValueError("bad task line")
    return float(ts_b), outcome, _opt_number(rt_b), _opt_number(wait_b), rest[:qlen], rest[qlen:]


def parse_pair(line: bytes) -> tuple[float, bytes, bytes, bytes]:
    """(ts, first field, second field, raw name) of a ``d|``, ``k|`` line."""
    _, ts_b, a, b, name = line.split(b"|", 4)
    return float(ts_b), a, b, name


def parse_single(line: bytes) -> tuple[float, bytes, bytes]:
    """(ts, field, raw name) of a ``v|``, ``r|``, ``n|`` line."""
    _, ts_b, a, name = line.split(b"|", 3)
    return float(ts_b), a, name
