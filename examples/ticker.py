"""Publish a simulated SOL/USD price into the room `prices`, ten times a second.

    python examples/ticker.py                 # until Ctrl-C
    python examples/ticker.py --count 50      # 50 prices, then exit

Open http://127.0.0.1:8081/?room=prices&name=me next to it to watch the
prices arrive. It goes through the broker, not through a WebSocket, so
members on every edge see the same ticks. Its settings are flags with CHAT_*
fallbacks, read by chatconfig like every command's; the broker link
(CHAT_BROKER_PUB, CHAT_BROKER_SUB, CURVE keys) is the edges' own.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from chatclient import Publisher
from chatconfig import NOT_EMPTY, PublisherSettings, Settings, above, at_least, parse, setting

SENDER = "sol-ticker"


@dataclass(frozen=True, slots=True)
class TickerSettings(Settings):
    """Publish a simulated SOL/USD price into rooms (examples/ticker.py)."""

    room: tuple[str, ...] = setting(
        ("prices",), "room to publish to (repeatable)", NOT_EMPTY, repeat=True
    )
    rate: float = setting(10.0, "prices per second", above(0))
    count: int = setting(0, "stop after this many prices (0: never)", at_least(0))
    start: float = setting(150.0, "first price, in USD", above(0))
    seed: int | None = setting(None, "random seed, for a repeatable walk (default: random)")
    publisher: PublisherSettings = field(default_factory=PublisherSettings)


class RandomWalk:
    """A price that drifts like a market: small log-normal steps around a start."""

    def __init__(self, start: float, volatility: float, rng: random.Random) -> None:
        self.price = start
        self.volatility = volatility
        self.rng = rng

    def step(self) -> float:
        self.price *= math.exp(self.rng.gauss(0.0, self.volatility))
        return self.price


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(TickerSettings, argv, prog="ticker.py")
    walk = RandomWalk(settings.start, 0.0008, random.Random(settings.seed))
    interval = 1.0 / settings.rate
    with Publisher.from_settings(settings.publisher, sender=SENDER) as publisher:
        sent = 0
        next_at = time.monotonic()
        try:
            while settings.count == 0 or sent < settings.count:
                price = walk.step()
                for room in settings.room:
                    publisher.publish(room, f"SOL/USD {price:,.2f}")
                sent += 1
                # Keep a steady rate: sleep to the next slot, not a fixed interval.
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            pass
    print(f"published {sent} prices to {', '.join(settings.room)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
