"""Publish a simulated SOL/USD price into the room `prices`, ten times a second.

    python examples/ticker.py                 # until Ctrl-C
    python examples/ticker.py --count 50      # 50 prices, then exit

Open http://127.0.0.1:8081/?room=prices&name=me next to it to watch the
prices arrive. It goes through the broker (CHAT_BROKER_PUB / CHAT_BROKER_SUB),
not through a WebSocket, so members on every edge see the same ticks.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Sequence

from chatclient import Publisher
from chatconfig import DEFAULT_BROKER_PUB, DEFAULT_BROKER_SUB


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
    parser = argparse.ArgumentParser(description="Publish a simulated SOL/USD price into a room.")
    parser.add_argument("--room", default="prices")
    parser.add_argument("--rate", type=float, default=10.0, help="prices per second")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--start", type=float, default=150.0, help="first price, in USD")
    parser.add_argument("--seed", type=int, default=None)
    env = os.environ
    parser.add_argument("--broker-pub", default=env.get("CHAT_BROKER_PUB", DEFAULT_BROKER_PUB))
    parser.add_argument("--broker-sub", default=env.get("CHAT_BROKER_SUB", DEFAULT_BROKER_SUB))
    args = parser.parse_args(argv)

    walk = RandomWalk(args.start, 0.0008, random.Random(args.seed))
    interval = 1.0 / args.rate
    with Publisher.open(args.broker_pub, args.broker_sub, sender="sol-ticker") as publisher:
        sent = 0
        next_at = time.monotonic()
        try:
            while args.count == 0 or sent < args.count:
                price = walk.step()
                publisher.publish(args.room, f"SOL/USD {price:,.2f}")
                sent += 1
                # Keep a steady rate: sleep to the next slot, not a fixed interval.
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            pass
    print(f"published {sent} prices to {args.room!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
