"""Identifiers that stay unique across every edge and every restart."""

from __future__ import annotations

import secrets
import time

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, rem = divmod(n, 36)
        out.append(_DIGITS[rem])
    return "".join(reversed(out))


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
