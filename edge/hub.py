"""The edge's I/O shell around the pure core: connections, fan-out, probes.

It executes the intents of `edge.session`, fans what arrives from the broker
out to local members, and keeps the broker path probed. Fan-out never
awaits: each chat becomes one WebSocket frame, built once, appended to every
member's pending writes, and each touched connection gets one write per batch.
A connection that owes more than its outbox allows is closed as slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from chatconfig import EdgeSettings
from edge.auth import Deadlines, Identity, may_join
from edge.bus import Batch, Bus
from edge.connection import Connection
from edge.guard import Gate
from edge.metrics import Stats
from edge.probes import ProbeClock
from edge.ratelimit import ConnectionLimits, limits_factory
from edge.rooms import RoomRegistry
from edge.session import Close, FrameHandler, Intent, Publish, Reply, Subscribe, Unsubscribe
from protocol.codec import encode_chat
from protocol.frames import PING_FRAME, close_frame, pong_frame, text_frame
from protocol.ids import Sequence, new_instance_id
from protocol.topics import PROBE_MARK, probe_body, room_topic
from protocol.websocket import (
    CLOSE_TOO_BIG,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Control,
    Event,
    FrameParser,
    Message,
    Violation,
    close_code,
)

log = logging.getLogger("edge")

PROBE_RETRY = 0.1  # seconds between probes of a path or room not yet proven live
TICK = 0.05
CLOSE_GRACE = 5.0  # seconds a closing connection gets to flush before it is aborted


def _connection_id(conn: Connection) -> str:
    return conn.sender


def _may_join(conn: Connection, room_id: str) -> bool:
    return may_join(conn.identity, room_id)


def _limits(conn: Connection) -> ConnectionLimits | None:
    return conn.limits


class Hub:
    def __init__(self, settings: EdgeSettings, bus: Bus, gate: Gate | None = None) -> None:
        self.settings = settings
        self.gate = gate
        self.bus = bus
        self.instance_id = new_instance_id()
        self.registry: RoomRegistry[Connection] = RoomRegistry(settings.limits.max_rooms)
        self.handler = FrameHandler(
            self.registry,
            Sequence(self.instance_id, "-"),
            lambda: time.time_ns() // 1_000_000,
            settings.limits.max_message_chars,
            self.healthy,
            may_join=_may_join,
            limits=_limits,
        )
        self._new_limits = limits_factory(
            settings.rates.rate_limit, settings.rates.rate_burst,
            settings.rates.join_rate_limit, settings.rates.join_rate_burst, time.monotonic,
        )
        self.expiries: Deadlines[Connection] = Deadlines()  # token exp, swept in tick()
        self.connection_ids = Sequence(self.instance_id, ".")
        self.connections: set[Connection] = set()
        self.probes = ProbeClock(
            self.instance_id, settings.liveness.probe_interval,
            settings.liveness.probe_timeout, PROBE_RETRY,
        )
        self.stats = Stats()
        self.outbox_bytes = settings.limits.outbox_bytes
        self._all_gone: asyncio.Event | None = None
        self._barriers: dict[int, asyncio.Event] = {}
        self._outgoing: dict[bytes, list[bytes]] = {}  # chats to publish, per room topic
        self._flush_scheduled = False
        self._barrier_token = 0
        self.closing = False
        bus.subscribe(self.probes.topic)

    # Connections.

    def open(
        self, transport: asyncio.Transport, identity: Identity | None = None, ip: str = ""
    ) -> Connection:
        conn = Connection(
            self, self.connection_ids.next(), transport,
            FrameParser(self.settings.limits.max_frame_bytes), identity, self._new_limits(), ip,
        )
        if identity is not None:
            self.expiries.set(conn, identity.exp)
        self.connections.add(conn)
        self.stats.connections_total += 1
        return conn

    def on_event(self, conn: Connection, event: Event) -> None:
        """A frame from a client, parsed."""
        conn.silent = False
        match event:
            case Message(opcode, data):
                if opcode == OP_TEXT:
                    self.receive(conn, data)
                else:
                    self.receive_binary(conn)
            case Control(opcode, data):
                if opcode == OP_PING:
                    conn.write(pong_frame(data))
                elif opcode == OP_CLOSE:
                    self._closed_by_peer(conn, close_code(data))
            case Violation(code, reason):
                self._mark_closed(conn, "too_big" if code == CLOSE_TOO_BIG else "protocol_error")
                self._finish(conn, code, reason)

    def receive(self, conn: Connection, data: str | bytes) -> None:
        conn.silent = False
        self._execute(conn, self.handler.handle(conn, conn.sender, data))

    def check_outbox(self, conn: Connection) -> None:
        """After a client's input: replies (pongs, errors) count against its outbox too."""
        if conn.close_reason is None and conn.backlog() > self.outbox_bytes:
            self.close(conn, 1013, "too slow: outbox full", "slow")

    def receive_binary(self, conn: Connection) -> None:
        conn.silent = False
        self._execute(conn, self.handler.binary_frame())

    def close(self, conn: Connection, code: int, reason: str, why: str) -> None:
        """Close from our side: the close frame goes out after what is already queued."""
        if conn.close_reason is not None:
            return
        if why != "shutdown":
            log.info("closing %s with %d (%s), %d bytes still queued",
                     conn.conn_id, code, why, conn.backlog())
        self._mark_closed(conn, why)
        self._finish(conn, code, reason)

    def _closed_by_peer(self, conn: Connection, code: int | None) -> None:
        """The client sent a close frame: answer it (RFC 6455 echoes the code), then close."""
        if conn.close_reason is None:
            self._mark_closed(conn, "client")
            self._finish(conn, 1000 if code is None else code, "")

    def _finish(self, conn: Connection, code: int, reason: str) -> None:
        transport = conn.transport
        transport.write(close_frame(code, reason))
        self._leave_all(conn)
        conn.parser = None  # frees any half-received message
        # FIN after what is queued, but keep reading (and dropping) until the
        # peer closes: closing a socket with unread input sends a reset, and a
        # reset destroys the queued messages and the close frame with them.
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        if conn.closer is None:
            conn.closer = asyncio.get_running_loop().call_later(
                CLOSE_GRACE, self._abort_late, conn
            )

    def _abort_late(self, conn: Connection) -> None:
        if not conn.transport.is_closing() or conn.backlog():
            log.info("aborting %s: %d bytes not taken in %.0f s",
                     conn.conn_id, conn.backlog(), CLOSE_GRACE)
        conn.transport.abort()

    def forget(self, conn: Connection, why: str) -> None:
        """The connection is gone (its handler ended): count it once, drop its rooms."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.expiries.discard(conn)
        if conn.closer is not None:
            conn.closer.cancel()
            conn.closer = None
        conn.parser = None
        if self.gate is not None:
            self.gate.release(conn.ip)
        if not self.connections and self._all_gone is not None:
            self._all_gone.set()
        self._mark_closed(conn, why)
        self._leave_all(conn)

    def _mark_closed(self, conn: Connection, why: str) -> None:
        """Record why a connection ends, and count it, once: when it is decided."""
        if conn.close_reason is None:
            conn.close_reason = why
            self.stats.disconnects[why] += 1

    def publish_external(self, room_id: str, message: str, sender: str) -> str:
        """Publish a chat from outside any room membership (the HTTP API); return its id."""
        message_id = self.handler.message_ids.next()
        body = encode_chat(room_id, message, message_id, sender, time.time_ns() // 1_000_000)
        self._queue_publish(room_topic(room_id), body)
        return message_id

    def _queue_publish(self, topic: bytes, body: bytes) -> None:
        """Publish at the end of this loop iteration, with the room's other chats."""
        self.stats.messages_in += 1
        pending = self._outgoing.get(topic)
        if pending is None:
            self._outgoing[topic] = [body]
        else:
            pending.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_publishes)

    def _flush_publishes(self) -> None:
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        for topic, bodies in outgoing.items():
            if len(bodies) == 1:
                self.bus.publish(topic, bodies[0])
            else:
                self.bus.publish_many(topic, bodies)

    def _leave_all(self, conn: Connection) -> None:
        for intent in self.handler.disconnect(conn):
            self._execute(conn, [intent])

    def _execute(self, conn: Connection, intents: list[Intent]) -> None:
        for intent in intents:
            match intent:
                case Publish(topic, body):
                    self._queue_publish(topic, body)
                case Reply(frame, error):
                    conn.write(text_frame(frame))
                    if error is not None:
                        self.stats.errors[error.value] += 1
                case Subscribe(topic):
                    self.bus.subscribe(topic)
                    self._probe_room(topic, time.monotonic())
                case Unsubscribe(topic):
                    self.bus.unsubscribe(topic)
                    self.probes.room_settled(topic)
                case Close(code, reason, why):
                    self.close(conn, code, reason, why)

    # Broker side.

    def on_batch(self, batch: Batch) -> None:
        room_of = self.registry.room
        touched: dict[Connection, list[bytes]] = {}
        delivered = 0
        for parts in batch:
            n = len(parts)
            if n < 2:
                continue
            topic = parts[0]
            if n == 2:  # the common case: one chat
                body = parts[1]
                if body[:1] == PROBE_MARK:
                    self._on_probe(topic, body)
                    continue
                frame = text_frame(body)
                count = 1
            else:  # several chats of one room, published together
                chunks = []
                for body in parts[1:]:
                    if body[:1] == PROBE_MARK:
                        self._on_probe(topic, body)
                    else:
                        chunks.append(text_frame(body))
                if not chunks:
                    continue
                frame = b"".join(chunks)
                count = len(chunks)
            room = room_of(topic)
            if room is None:
                continue  # unsubscribed a moment ago
            for member in room.members:
                pending = touched.get(member)
                if pending is None:
                    touched[member] = [frame]
                else:
                    pending.append(frame)
            delivered += count * len(room.members)
        self.stats.messages_out += delivered
        limit = self.outbox_bytes
        for conn, frames in touched.items():
            if conn.close_reason is not None:
                continue
            transport = conn.transport
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            if transport.get_write_buffer_size() > limit:
                self.close(conn, 1013, "too slow: outbox full", "slow")

    def _on_probe(self, topic: bytes, body: bytes) -> None:
        token = self.probes.own_probe(body)
        if token is None:
            return  # another edge's probe of a room we share
        now = time.monotonic()
        if topic == self.probes.topic:
            barrier = self._barriers.pop(token, None)
            if barrier is not None:
                barrier.set()
                return
            if self.probes.health_probe_returned(token, now) and self.probes.last_rtt is not None:
                log.info("broker path live (round trip %.1f ms)", self.probes.last_rtt * 1000)
                self._reverify_rooms(now)
            return
        if not self.probes.room_probe_matches(topic, token):
            return  # from an earlier subscription of this room, or stale
        self.probes.room_settled(topic)
        for conn, frame in self.handler.acknowledge_live(topic, _connection_id):
            conn.write(text_frame(frame))

    def on_broker_disconnect(self) -> None:
        if self.probes.last_seen is not None:
            log.warning("broker connection lost; chats refused until a probe returns")
        self.probes.path_lost()

    async def flush_from_broker(self, grace: float) -> bool:
        """Wait until everything the broker sent us before now has been fanned out.

        A probe travels the same pipe as the chats ahead of it, so once it
        comes back every earlier message has been delivered to the outboxes.
        """
        self._barrier_token -= 1  # negative tokens never clash with health probes
        token = self._barrier_token
        event = self._barriers[token] = asyncio.Event()
        self.bus.publish(self.probes.topic, probe_body(self.instance_id, token))
        try:
            await asyncio.wait_for(event.wait(), grace)
            return True
        except TimeoutError:
            return False
        finally:
            self._barriers.pop(token, None)

    def _probe_room(self, topic: bytes, now: float) -> None:
        body = self.probes.room_probe_due(topic, now)
        if body is not None:
            self.bus.publish(topic, body)
            self.stats.probes_sent += 1

    def _reverify_rooms(self, now: float) -> None:
        # The path was broken (broker restart?): ZeroMQ resends subscriptions on
        # reconnect; probing every room proves each one made it.
        for room in self.registry.mark_all_unverified():
            self.probes.room_settled(room.topic)  # probes sent before the break are void
            self._probe_room(room.topic, now)

    def tick(self) -> None:
        """Called every TICK seconds: health probe, and re-probe rooms still pending."""
        now = time.monotonic()
        was_healthy = self.probes.healthy(now - TICK)
        body = self.probes.health_probe_due(now)
        if body is not None:
            self.bus.publish(self.probes.topic, body)
            self.stats.probes_sent += 1
        if was_healthy and not self.probes.healthy(now):
            log.warning("broker path down: no probe back for %.1f s", self.probes.timeout)
        for room in self.registry.pending():
            self._probe_room(room.topic, now)
        for conn in self.expiries.pop_due(time.time()):
            self.close(conn, 4001, "token expired", "token_expired")

    def healthy(self) -> bool:
        return self.probes.healthy(time.monotonic())

    def heartbeat(self) -> None:
        """One sweep over every connection instead of a timer per connection."""
        for conn in list(self.connections):
            if conn.close_reason is not None:
                continue
            if conn.silent:
                self._mark_closed(conn, "heartbeat")
                self._leave_all(conn)
                conn.transport.abort()
            else:
                conn.silent = True
                conn.write(PING_FRAME)

    async def shutdown(self, grace: float) -> None:
        """Deliver what is in flight, close every client with 1001 at once, wait for them."""
        self.closing = True  # the front door refuses upgrades from now on
        deadline = time.monotonic() + grace
        if self.connections and self.healthy():
            await self.flush_from_broker(min(1.0, grace / 2))
        self._all_gone = asyncio.Event()
        for conn in list(self.connections):
            self.close(conn, 1001, "server shutting down", "shutdown")
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), deadline - time.monotonic())

    def gauges(self) -> dict[str, float]:
        rooms = len(self.registry)
        rtt = self.probes.last_rtt
        return {
            "chat_connections": len(self.connections),
            "chat_rooms": rooms,
            "chat_subscriptions": rooms,
            "chat_pending_rooms": self.registry.pending_count(),
            "chat_broker_up": 1.0 if self.healthy() else 0.0,
            "chat_broker_rtt_seconds": rtt if rtt is not None else float("nan"),
        }

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        seen = self.probes.last_seen
        rtt = self.probes.last_rtt
        return {
            "status": "ok" if self.probes.healthy(now) else "unavailable",
            "edge": self.settings.name
            or f"{self.settings.listen.host}:{self.settings.listen.port}",
            "instance": self.instance_id,
            "connections": len(self.connections),
            "rooms": len(self.registry),
            "broker": {
                "pub": self.settings.broker.endpoints.broker_pub,
                "sub": self.settings.broker.endpoints.broker_sub,
                "lastProbeRoundTripMs": None if rtt is None else round(rtt * 1000, 3),
                "lastProbeSecondsAgo": None if seen is None else round(now - seen, 3),
            },
        }
