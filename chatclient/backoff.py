"""Reconnect delays: exponential growth with full jitter.

Full jitter (a uniform draw between zero and the exponential ceiling) keeps
thousands of clients that lost the same edge from coming back in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        base: float = 0.1,
        cap: float = 5.0,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise ValueError("need 0 < base <= cap and factor >= 1")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        # The exponent is bounded so that a client retrying for days cannot overflow.
        return min(self.cap, self.base * self.factor ** min(self.attempt, 64))

    def next(self) -> float:
        """Seconds to wait before the next attempt; each call raises the ceiling."""
        delay = self.ceiling() * self.rng()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A connection worked: the next failure starts from the base again."""
        self.attempt = 0
