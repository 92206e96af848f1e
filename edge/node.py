"""One edge, assembled: the small parts wired together, and what the HTTP side asks.

The data path of a chat, module by module:

    client bytes -> edge.connection (the socket) -> protocol.websocket (frames)
    -> edge.dispatch -> edge.session (what the frame means) -> edge.publishing
    -> edge.bus -> broker -> edge.bus (every subscribed edge) -> edge.fanout
    -> edge.connection.send -> each member

`Edge` owns no state of its own beyond the parts; it answers `/healthz`,
`/metrics` and the HTTP publish API, and runs the graceful shutdown.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from chatconfig import EdgeSettings
from edge.acks import PendingAcks
from edge.bus import Bus
from edge.clients import Clients
from edge.connection import Connection
from edge.continuity import Continuity, Effects
from edge.delivery import apply
from edge.dispatch import Dispatcher
from edge.fanout import Fanout
from edge.guard import Gate
from edge.liveness import BrokerPath
from edge.metrics import Stats
from edge.presence import PresenceTally
from edge.publishing import PublishQueue
from edge.ratelimit import limits_factory
from edge.rooms import RoomRegistry
from edge.session import FrameHandler
from protocol.codec import encode_chat
from protocol.frames import text_frame
from protocol.ids import Sequence, new_instance_id
from protocol.presence import HEARTBEAT_TOPIC
from protocol.shards import shard_of
from protocol.topics import edge_topic, room_topic

SHARD_CACHE_MAX = 200_000  # rooms whose shard an edge remembers


def clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Edge:
    def __init__(self, settings: EdgeSettings, bus: Bus, gate: Gate | None = None) -> None:
        self.settings = settings
        self.instance_id = new_instance_id()
        self.stats = Stats()
        limits, rates, liveness = settings.limits, settings.rates, settings.liveness
        self.rooms: RoomRegistry[Connection] = RoomRegistry(limits.max_rooms)
        self.continuity: Continuity[Connection] = Continuity(
            self.rooms, edge_topic(self.instance_id), limits.history_max, limits.recovery_max
        )
        self.acks: PendingAcks[Connection] = PendingAcks()
        self.bus = bus
        self.path = BrokerPath(
            self.instance_id, bus, self.rooms, self.continuity, self.stats,
            probe_interval=liveness.probe_interval, probe_timeout=liveness.probe_timeout,
        )
        self.message_ids = Sequence(self.instance_id, "-")
        # One id for both: an edge restarted is a new edge to the presence
        # owners (its old members expire there); ids can never collide.
        self.tally = PresenceTally(self.instance_id, self.instance_id)
        self._next_heartbeat = 0.0
        self._shard_of_room: dict[str, int] = {}
        self.handler = FrameHandler(
            self.rooms, self.message_ids, clock_ms, limits.max_message_chars,
            self.path.room_healthy, self.tally,
        )
        self.publishes = PublishQueue(bus, self.stats)
        self.dispatch = Dispatcher(
            self.handler, self.publishes, self.path, self.continuity, self.acks, bus, self.stats,
            liveness.join_timeout,
        )
        self.clients = Clients(
            Sequence(self.instance_id, "."),
            self.dispatch,
            self.dispatch.leave_rooms,
            limits_factory(
                rates.rate_limit, rates.rate_burst,
                rates.join_rate_limit, rates.join_rate_burst, time.monotonic,
            ),
            self.stats,
            max_message_bytes=limits.max_frame_bytes,
            outbox_bytes=limits.outbox_bytes,
            gate=gate,
        )
        self.fanout = Fanout(self.rooms, self.continuity, self.acks, self.path, bus, self.stats,
                             self.dispatch.listings)
        self.closing = False  # shutting down: the front door refuses upgrades

    def healthy(self) -> bool:
        return self.path.healthy()

    def tick(self) -> None:
        self.path.tick()
        self.clients.tick()
        now = time.monotonic()
        self.dispatch.tick(now)
        if now >= self._next_heartbeat:
            # Through the chats' queue: after the reports already queued. Each
            # shard owns the presence of its rooms: it hears of those only.
            for shard in range(self.bus.shards):
                owns = functools.partial(self._owned, shard=shard)
                for part in self.tally.heartbeat(owns=owns):
                    self.publishes.put(HEARTBEAT_TOPIC, part, counted=False, shard=shard)
            self._next_heartbeat = now + self.settings.liveness.presence_heartbeat
        fx: Effects[Connection] = Effects()
        self.continuity.expire(now, fx)
        for conn, frame in self.acks.expire(now):
            fx.member_frame(conn, text_frame(frame))
        apply(fx, self.bus, self.stats)

    def _owned(self, room_id: str, shard: int) -> bool:
        """Does `shard` own `room_id` (the hash remembered: heartbeats ask every 2 s)."""
        if self.bus.shards == 1:
            return True
        known = self._shard_of_room.get(room_id)
        if known is None:
            if len(self._shard_of_room) > SHARD_CACHE_MAX:
                self._shard_of_room.clear()
            known = self._shard_of_room[room_id] = shard_of(room_id, self.bus.shards)
        return known == shard

    def publish_external(self, room_id: str, message: str, sender: str) -> str:
        """Publish a chat from outside any room membership (the HTTP API); return its id.

        The caller has checked it with `protocol.chats.check_chat`.
        """
        message_id = self.message_ids.next()
        self.publishes.put(room_topic(room_id), encode_chat(
            room_id, message, message_id, sender, clock_ms()
        ))
        return message_id

    async def shutdown(self, grace: float) -> None:
        """Deliver what is in flight, close every client with 1001 at once, wait for them."""
        self.closing = True
        deadline = time.monotonic() + grace
        if self.clients.open_ones and self.healthy():
            await self.path.barrier(min(1.0, grace / 2))
        await self.clients.close_all(deadline)

    def gauges(self) -> dict[str, float]:
        rooms = len(self.rooms)
        return {
            "chat_connections": len(self.clients),
            "chat_rooms": rooms,
            "chat_subscriptions": rooms,
            "chat_pending_rooms": self.rooms.pending_count(),
        }

    def shard_gauges(self) -> dict[str, list[float]]:
        """Per broker shard, in shard order."""
        now = time.monotonic()
        clocks = self.path.shards
        return {
            "chat_broker_up": [1.0 if c.healthy(now) else 0.0 for c in clocks],
            "chat_broker_rtt_seconds": [
                c.last_rtt if c.last_rtt is not None else float("nan") for c in clocks
            ],
        }

    def counters(self) -> dict[str, tuple[str, float]]:
        c = self.continuity
        return {
            "chat_stream_repairs": ("holes in a room's stream filled from history", c.repairs),
            "chat_resyncs": ("resyncs sent: a hole history no longer held, or a new epoch",
                             c.resyncs),
            "chat_broker_link_dropped": ("messages dropped on their way to the broker, past "
                                         "--hwm", self.bus.dropped),
        }

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        listen = self.settings.listen
        shards = []
        for i, (shard, probes) in enumerate(zip(self.settings.broker.shards(), self.path.shards,
                                                strict=True)):
            seen = probes.last_seen
            rtt = probes.last_rtt
            state: dict[str, Any] = {
                "shard": i,
                "status": "ok" if probes.healthy(now) else "unavailable",
                "pub": shard.pub,
                "sub": shard.sub,
                "lastProbeRoundTripMs": None if rtt is None else round(rtt * 1000, 3),
                "lastProbeSecondsAgo": None if seen is None else round(now - seen, 3),
            }
            refusal = self.path.refusals[i]
            if refusal is not None:
                state["error"] = refusal[0]
                state["errorSecondsAgo"] = round(now - refusal[1], 3)
            shards.append(state)
        up = sum(1 for s in shards if s["status"] == "ok")
        # 503 only when no shard answers: every edge sees the same shards, so
        # taking edges out of a balancer for one shard's outage would not help.
        return {
            "status": "ok" if up else "unavailable",
            "edge": self.settings.name or f"{listen.host}:{listen.port}",
            "instance": self.instance_id,
            "connections": len(self.clients),
            "rooms": len(self.rooms),
            # The first shard, as before shards: one-broker tools keep reading it.
            "broker": {k: v for k, v in shards[0].items() if k != "shard"},
            "shardsUp": up,
            "shards": shards,
        }
