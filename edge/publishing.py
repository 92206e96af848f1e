"""Chats on their way into the broker, batched per room per loop iteration.

A chat is not published the moment it is accepted: every chat accepted in
the same event-loop iteration into the same room leaves as one ZeroMQ
message (`[topic, body, body, ...]`), which costs the broker and every
subscribed edge one wake-up instead of one per chat.
"""

from __future__ import annotations

import asyncio

from edge.bus import Bus
from edge.metrics import Stats


class PublishQueue:
    def __init__(self, bus: Bus, stats: Stats) -> None:
        self._bus = bus
        self._stats = stats
        self._outgoing: dict[bytes, list[bytes]] = {}  # chats to publish, per room topic
        self._flush_scheduled = False

    def put(self, topic: bytes, body: bytes) -> None:
        """Publish at the end of this loop iteration, with the room's other chats."""
        self._stats.messages_in += 1
        pending = self._outgoing.get(topic)
        if pending is None:
            self._outgoing[topic] = [body]
        else:
            pending.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        for topic, bodies in outgoing.items():
            if len(bodies) == 1:
                self._bus.publish(topic, bodies[0])
            else:
                self._bus.publish_many(topic, bodies)
