"""Event validation and the compact raw-list encoding.

A flush pushes one raw-list element per shard, a *chunk*: a text header that the Lua scripts
read, a marker, then one block per event kind::

    b|<events>\n \x00v2 <block> <block> ...
    block:  <kind: 1 byte> <events: u32> <payload bytes: u32> <payload>

Every number is little-endian. A kind whose events carry a name (API requests, payment
failures) is written as *runs*, one per name, and columns, so a flush costs a few C-level
array copies instead of formatting every event, and the aggregator folds a run at once::

    payload: <runs k: u32> <events per run: u32[k]> <name bytes: u16[k]> <names, UTF-8>
             <ts: f64[n]> <one column per value field, typed by KIND_VALUES>

    a  API request      values: response_time_s f64, status_code u16
    p  payment failure  values: amount f64
    t  Celery task attempt  values: outcome u16 (0 success, 1 failure, 2 retry),
                        runtime_s f64, queue_wait_s f64 (NaN: unknown); its name is
                        ``<queue length>:<queue><task>`` (``task_name``)
    d  database query   values: duration_s f64, ok u16 (1, or 0: it raised)
    k  cache call       values: keys looked up u32, hits u32
    v  custom value     values: value f64
    r  custom event     values: ok u16
    n  queries of one API request  values: queries u32 (named by the endpoint)
    o  buffer overflow  payload: <events dropped: u64> (counted in the block as one event)

Doubles round-trip exactly; names are any text (length-prefixed, never escaped). A buffered
item is ``(kind, ts, name, *values)``: a new kind adds its tag and value typecodes to
``KIND_VALUES``, and a fold method taking ``(names, run lengths, ts, *value columns)`` to
``fold._Folder.block_folders``; an aggregator that does not know a kind skips its blocks
and counts their events as malformed.

The previous version's elements are text lines, the free-text field last (``\\`` and
newlines escaped), either one per element or as a chunk ``b|<count>`` then one per line::

    a|<ts>|<response_time_s>|<status_code>|<endpoint>
    p|<ts>|<amount>|<reason>
    o|<ts>|<count>

``fold.fold`` still reads them (rolling upgrades: workers first, then apps).
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Sequence
from decimal import Decimal
from itertools import chain
from operator import itemgetter
from typing import Any

MAX_NAME_LEN = 200
API = "a"
PAYMENT = "p"
OVERFLOW = "o"
TASK = "t"
QUERY = "d"
CACHE = "k"
VALUE = "v"
RATIO = "r"
QUERIES = "n"
TASK_OUTCOMES = {"s": 0, "f": 1, "r": 2}  # success, failure, retry -> the outcome column

# Value typecodes (``array``) of each named kind, after ``(kind, ts, name)``.
KIND_VALUES: dict[str, str] = {
    API: "dH",
    PAYMENT: "d",
    TASK: "Hdd",
    QUERY: "dH",
    CACHE: "II",
    VALUE: "d",
    RATIO: "H",
    QUERIES: "I",
}
MARKER = b"\x00v2"
BLOCK = struct.Struct("<cII")  # kind, events, payload bytes
RUNS = struct.Struct("<I")
OVERFLOW_COUNT = struct.Struct("<Q")
_BIG_ENDIAN = sys.byteorder == "big"
assert {array(t).itemsize for t in "dHI"} == {8, 2, 4}, "unexpected C type sizes"


# Upper bounds keep every stored sum finite and every entry small.
MAX_RESPONSE_TIME_S = 1e6
MAX_AMOUNT = 1e15
MAX_METRIC_VALUE = 1e15
MAX_COUNT = 2**31  # queries of one request, keys of one cache call


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
    if not isinstance(outcome, str) or outcome not in TASK_OUTCOMES:
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


def task_name(task: str, queue: str) -> str:
    """The name a task attempt is buffered and sent under: its queue, then the task."""
    return f"{len(queue)}:{queue}{task}"


def split_task_name(name: str) -> tuple[str, str]:
    """(task, queue) of a ``task_name``; ValueError when it is not one."""
    head, _, rest = name.partition(":")
    if not head.isdigit() or int(head) >= len(rest):
        raise ValueError("bad task name")
    n = int(head)
    return rest[n:], rest[:n]


def _le(column: array[Any]) -> bytes:
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


def encode_runs(kind: str, runs: Sequence[tuple[str, Sequence[tuple[Any, ...]]]]) -> bytes:
    """One block of a named kind: ``runs`` pairs a name with its ``(kind, ts, name, *values)``
    items (the flusher groups them by name as it takes them from the buffer)."""
    names = [name.encode() for name, _ in runs]
    items = list(chain.from_iterable(group for _, group in runs))
    parts = [
        RUNS.pack(len(runs)),
        _le(array("I", [len(group) for _, group in runs])),
        _le(array("H", [len(n) for n in names])),
        *names,
        _le(array("d", map(itemgetter(1), items))),
    ]
    for field, code in enumerate(KIND_VALUES[kind], 3):
        parts.append(_le(array(code, map(itemgetter(field), items))))
    payload = b"".join(parts)
    return BLOCK.pack(kind.encode(), len(items), len(payload)) + payload


def encode_overflow_block(count: int) -> bytes:
    """The count of events a full app buffer dropped (one event of the chunk)."""
    return BLOCK.pack(OVERFLOW.encode(), 1, OVERFLOW_COUNT.size) + OVERFLOW_COUNT.pack(count)


def encode_chunk(blocks: Sequence[bytes], events: int) -> bytes:
    """One raw-list element holding ``events`` events in ``blocks``."""
    return b"b|%d\n" % events + MARKER + b"".join(blocks)


def element_count(element: bytes) -> int:
    """Events in one raw-list element: a chunk's header count, else one."""
    if element[:2] == b"b|":
        head = element[2 : element.find(b"\n")]
        if head.isdigit():
            return int(head)
    return 1


def element_lines(element: bytes) -> list[bytes]:
    """The previous version's event lines of one element: a chunk's lines, else the element."""
    return element.split(b"\n")[1:] if element[:2] == b"b|" else [element]


def chunk_blocks(element: bytes) -> list[tuple[str, int, memoryview]] | None:
    """``(kind, events, payload)`` of each block of a chunk; None for the previous version's
    text elements. Raises ValueError when the chunk's structure does not add up."""
    end = element.find(b"\n", 0, 24)
    if end < 0 or element[end + 1 : end + 1 + len(MARKER)] != MARKER:
        return None
    head = element[2:end]
    if element[:2] != b"b|" or not head.isdigit():
        raise ValueError("bad chunk header")
    data = memoryview(element)
    at, total, blocks = end + 1 + len(MARKER), 0, []
    while at < len(data):
        if at + BLOCK.size > len(data):
            raise ValueError("cut block header")
        kind, events, size = BLOCK.unpack_from(data, at)
        at += BLOCK.size
        if at + size > len(data):
            raise ValueError("cut block")
        blocks.append((kind.decode("latin-1"), events, data[at : at + size]))
        at += size
        total += events
    if total != int(head):
        raise ValueError("block counts do not add up to the header")
    return blocks


def _column(data: memoryview, at: int, code: str, n: int) -> tuple[array[Any], int]:
    column = array(code)
    end = at + n * column.itemsize
    if end > len(data):
        raise ValueError("cut column")
    column.frombytes(data[at:end])
    if _BIG_ENDIAN:
        column.byteswap()
    return column, end


def decode_runs(
    kind: str, payload: memoryview, events: int
) -> tuple[list[bytes], array[Any], array[Any], list[array[Any]]]:
    """A named kind's block: names (UTF-8, undecoded), events per run, the ts column and the
    value columns. Raises ValueError when the lengths do not add up."""
    if len(payload) < RUNS.size:
        raise ValueError("cut block")
    (k,) = RUNS.unpack_from(payload)
    counts, at = _column(payload, RUNS.size, "I", k)
    sizes, at = _column(payload, at, "H", k)
    if sum(counts) != events:
        raise ValueError("run lengths do not add up")
    names = []
    for size in sizes:
        names.append(bytes(payload[at : at + size]))
        at += size
    if at > len(payload):
        raise ValueError("cut names")
    ts, at = _column(payload, at, "d", events)
    values = []
    for code in KIND_VALUES[kind]:
        column, at = _column(payload, at, code, events)
        values.append(column)
    if at != len(payload):
        raise ValueError("trailing bytes")
    return names, counts, ts, values


def overflow_count(payload: memoryview) -> int:
    if len(payload) != OVERFLOW_COUNT.size:
        raise ValueError("bad overflow block")
    return int(OVERFLOW_COUNT.unpack(payload)[0])


def encode_api(ts: float, endpoint: str, response_time_s: float, status_code: int) -> bytes:
    """A chunk of one API request (tests and tools; the flusher writes many per chunk)."""
    return encode_chunk(
        [encode_runs(API, [(endpoint, [(API, ts, endpoint, response_time_s, status_code)])])], 1
    )


def encode_payment(ts: float, reason: str, amount: float) -> bytes:
    return encode_chunk([encode_runs(PAYMENT, [(reason, [(PAYMENT, ts, reason, amount)])])], 1)


def encode_overflow(count: int) -> bytes:
    return encode_chunk([encode_overflow_block(count)], 1)
