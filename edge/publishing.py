"""Chats on their way into the broker, batched per room per loop iteration.

A chat is not published the moment it is accepted: every chat accepted in
the same event-loop iteration into the same room leaves as one ZeroMQ
message, which costs the broker and every subscribed edge one wake-up
instead of one per chat; runs of chats without a msgId even share one frame
(`protocol.stream.pack`).
"""

from __future__ import annotations

import asyncio

from edge.bus import Bus
from edge.metrics import Stats
from protocol.stream import pack


class PublishQueue:
    def __init__(self, bus: Bus, stats: Stats) -> None:
        self._bus = bus
        self._stats = stats
        # chats to publish, per topic and shard (None: the room's own)
        self._outgoing: dict[tuple[bytes, int | None], list[bytes]] = {}
        self._flush_scheduled = False

    def put(self, topic: bytes, body: bytes, counted: bool = True,
            shard: int | None = None) -> None:
        """Publish at the end of this loop iteration, with the room's other chats.

        `counted`: a client's chat (not a presence report or query).
        `shard`: where a topic that is not a room's goes (a room's goes to its shard).
        """
        if counted:
            self._stats.messages_in += 1
        key = (topic, shard)
        pending = self._outgoing.get(key)
        if pending is None:
            self._outgoing[key] = [body]
        else:
            pending.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        for (topic, shard), bodies in outgoing.items():
            if len(bodies) == 1:
                self._bus.publish(topic, bodies[0], shard)
            else:
                self._bus.publish_many(topic, _packed(bodies), shard)


def _packed(bodies: list[bytes]) -> list[bytes]:
    """Consecutive plain chats as one part; a keyed chat stays a part of its own."""
    parts: list[bytes] = []
    run: list[bytes] = []
    for body in bodies:
        if body[:1] == b"{":
            run.append(body)
            continue
        if run:
            parts.append(pack(run))
            run = []
        parts.append(body)
    if run:
        parts.append(pack(run))
    return parts
