"""History rows and their compact encoding (Redis fields, PostgreSQL ``bytea``).

Bins are dense counts from the lowest bin to the highest, each count as wide as the largest
needs (1, 2, 4 or 8 bytes), after a 5-byte head; a minute row packs into 42 bytes.
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate

from ..windows import ZERO_BIN, bin_value, quantile


@dataclass
class Row:
    """One kind's statistics of one name over one period (see the module docstring)."""

    n: int = 0
    e: int = 0
    s: float = 0.0
    v: float | None = None
    bins: dict[int, int] | None = None
    packed: bytes | None = None  # bins still encoded, as read (decoded when merged)
    r: int = 0  # a second count where a kind needs one (a task's runs beside its attempts)

    def unpack(self) -> Row:
        if self.packed is not None:
            self.bins, self.packed = decode_bins(self.packed), None
        return self

    def p95(self) -> float | None:
        if self.packed is not None:
            return packed_quantile(self.packed, 0.95)
        return self.v if self.bins is None else quantile(self.bins, 0.95)

    def add(self, other: Row, sign: int = 1) -> None:
        self.unpack()
        other.unpack()
        self.n += sign * other.n
        self.r += sign * other.r
        self.e += sign * other.e
        self.s += sign * other.s
        if other.bins:
            bins = self.bins if self.bins is not None else {}
            for i, c in other.bins.items():
                total = bins.get(i, 0) + sign * c
                if total:
                    bins[i] = total
                else:
                    bins.pop(i, None)
            self.bins = bins


RowKey = tuple[str, str, str, int]  # (level, kind code, name, t)
Snapshot = tuple[str, str, int, Row]  # (kind code, name, minute start t, row)


# -- the compact encoding of bins and rows -------------------------------------------------------

_WIDTHS = ((0xFF, "B"), (0xFFFF, "H"), (0xFFFFFFFF, "I"), (2**64 - 1, "Q"))
_CODES = "BHIQ"
_BINS_HEAD = struct.Struct("<BhH")  # width code (+ 0x10: a zero-bin count follows), first, n


def encode_bins(bins: Mapping[int, int]) -> bytes:
    """Dense counts from the lowest bin to the highest, each as wide as the largest needs."""
    live = {i: c for i, c in bins.items() if c > 0}
    zero = live.pop(ZERO_BIN, 0)
    if not live and not zero:
        return b""
    first = min(live) if live else 0
    last = max(live) if live else -1
    counts = [0] * (last - first + 1)
    for i, c in live.items():
        counts[i - first] = c
    top = max([zero, *counts])
    code = next(n for n, (limit, _) in enumerate(_WIDTHS) if top <= limit)
    typecode = _CODES[code]
    head = _BINS_HEAD.pack(code | (0x10 if zero else 0), first, len(counts))
    tail = array(typecode, [zero] if zero else []) + array(typecode, counts)
    return head + tail.tobytes()


def _unpack_bins(blob: bytes) -> tuple[int, int, array[int]]:
    """(first bin, zero-bin count, dense counts) of an encoded sketch."""
    flags, first, _ = _BINS_HEAD.unpack_from(blob)
    counts = array(_CODES[flags & 0x0F])
    counts.frombytes(blob[_BINS_HEAD.size :])
    if flags & 0x10:
        return first, counts[0], counts[1:]
    return first, 0, counts


def decode_bins(blob: bytes) -> dict[int, int]:
    if not blob:
        return {}
    first, zero, counts = _unpack_bins(blob)
    bins = {first + offset: c for offset, c in enumerate(counts) if c}
    if zero:
        bins[ZERO_BIN] = zero
    return bins


def packed_quantile(blob: bytes, q: float) -> float | None:
    """``quantile(decode_bins(blob), q)`` without building the dict (reads stay fast)."""
    if not blob:
        return None
    first, zero, counts = _unpack_bins(blob)
    total = zero + sum(counts)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    if rank <= zero:
        return bin_value(ZERO_BIN)
    return bin_value(first + bisect_left(list(accumulate(counts)), rank - zero))


_MINUTE = struct.Struct("<BqqddBq")  # minute of the hour, n, e, s, v, has v, r
_PERIOD = struct.Struct("<qqdq")  # n, e, s, r; the bins follow


def encode_minutes(rows: Mapping[int, Row]) -> bytes:
    """The minute rows of one hour (minute of the hour -> row), in one string."""
    return b"".join(
        _MINUTE.pack(m, r.n, r.e, r.s, 0.0 if r.v is None else r.v, r.v is not None, r.r)
        for m, r in sorted(rows.items())
    )


def decode_minutes(blob: bytes) -> dict[int, Row]:
    out: dict[int, Row] = {}
    for m, n, e, s, v, has_v, r in _MINUTE.iter_unpack(blob or b""):
        out[m] = Row(n, e, s, v if has_v else None, r=r)
    return out


def encode_period(row: Row) -> bytes:
    return _PERIOD.pack(row.n, row.e, row.s, row.r) + (encode_bins(row.bins) if row.bins else b"")


def decode_period(blob: bytes, *, packed: bool = False) -> Row:
    """A period row; with ``packed`` its bins stay encoded until needed."""
    n, e, s, r = _PERIOD.unpack_from(blob)
    rest = blob[_PERIOD.size :]
    if packed:
        return Row(n, e, s, None, None, rest, r)
    return Row(n, e, s, None, decode_bins(rest) if rest else None, r=r)
