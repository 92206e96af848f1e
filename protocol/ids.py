"""Identifiers that stay unique across every edge and every restart."""

from __future__ import annotations

import secrets
import time

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


# Two digits at a time from tables: every chat an edge takes in gets an id,
# and a digit-by-digit loop was a few percent of an edge's CPU.
_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]  # "00" .. "zz"
_SHORT = [pair.lstrip("0") or "0" for pair in _PAIRS]  # the same without leading zeros


def base36(n: int) -> str:
    """`n` (0 or more) in base 36, lowercase, without leading zeros."""
    if n < 1296:
        return _SHORT[n]
    high, low = divmod(n, 1296)
    return base36(high) + _PAIRS[low]


def new_instance_id() -> str:
    """Start time in ms plus 24 random bits: distinct per process start."""
    return base36(time.time_ns() // 1_000_000) + secrets.token_hex(3)


class Sequence:
    """`<instance>-<n>`, n counting up from 1, in base 36."""

    __slots__ = ("_n", "_prefix")

    def __init__(self, instance_id: str, separator: str) -> None:
        self._prefix = instance_id + separator
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return self._prefix + base36(self._n)
