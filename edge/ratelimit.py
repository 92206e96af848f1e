"""Token buckets and connection caps, with the clock injected: no I/O, no timers.

A bucket holds up to `burst` tokens and gains `rate` per second; each request
takes one. A refused request starts (or continues) an *overrun*: refusals
that follow each other within `QUIET` seconds. A connection whose overrun has
lasted `PATIENCE` seconds is abusive and gets closed by the caller; one that
stops exceeding its rate for `QUIET` seconds starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Clock = Callable[[], float]

PATIENCE = 5.0  # seconds of sustained overrun before a connection is closed
QUIET = 1.0  # seconds without a refusal that end an overrun

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    __slots__ = ("_clock", "_last", "_last_refusal", "burst", "over_since", "rate", "tokens")

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self.tokens = float(burst)
        self._last = clock()
        self.over_since: float | None = None  # start of the current overrun
        self._last_refusal = 0.0

    def take(self) -> bool:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self._last = now
        if self.over_since is not None and now - self._last_refusal >= QUIET:
            self.over_since = None
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        if self.over_since is None:
            self.over_since = now
        self._last_refusal = now
        return False

    def abusive(self, patience: float = PATIENCE) -> bool:
        """Still refusing after `patience` seconds of refusals in a row."""
        if self.over_since is None:
            return False
        now = self._clock()
        return now - self._last_refusal < QUIET and now - self.over_since >= patience


class ConnectionLimits:
    """One connection's buckets: chats, and joins and leaves; None means unlimited."""

    __slots__ = ("chat", "membership")

    def __init__(self, chat: TokenBucket | None, membership: TokenBucket | None) -> None:
        self.chat = chat
        self.membership = membership


def limits_factory(
    chat_rate: float, chat_burst: float, join_rate: float, join_burst: float, clock: Clock
) -> Callable[[], ConnectionLimits | None]:
    """Settings -> a maker of per-connection limits. `chat_rate` 0 turns all limiting off."""
    if chat_rate <= 0:
        return lambda: None
    chat_burst = max(chat_burst, 1)
    join_burst = max(join_burst, 1)

    def make() -> ConnectionLimits:
        return ConnectionLimits(
            TokenBucket(chat_rate, chat_burst, clock),
            TokenBucket(join_rate, join_burst, clock) if join_rate > 0 else None,
        )

    return make


class ConcurrencyCap(Generic[K]):
    """At most `limit` concurrent holders per key (connections per IP); 0 means no cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[K, int] = {}

    def acquire(self, key: K) -> bool:
        count = self._counts.get(key, 0)
        if self.limit > 0 and count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: K) -> None:
        count = self._counts.get(key, 0)
        if count <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] = count - 1

    def count(self, key: K) -> int:
        return self._counts.get(key, 0)
