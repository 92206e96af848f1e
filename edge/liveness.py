"""Is the path through the broker working, and is each room's subscription live?

"The socket is connected" proves little, so both are proven by probes that
travel the same pipe as the chats: the path is healthy while the edge's own
health probes come back within `--probe-timeout`; a room's subscription is
live once a probe published on the room's topic has come back, and only then
do its members get `joined`. When the path breaks and comes back (a broker
restart), ZeroMQ resends the subscriptions, and every room proves itself
again. A barrier probe marks "everything the broker sent before now has been
fanned out" for a graceful shutdown.

The health bookkeeping is `edge.probes.ProbeClock`; each room's subscription
state (live, probe token, waiting replies) is `edge.rooms.RoomRegistry`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time

from edge.bus import Bus
from edge.connection import Connection
from edge.continuity import Continuity, Effects
from edge.delivery import apply
from edge.metrics import Stats
from edge.probes import ProbeClock
from edge.rooms import Room, RoomRegistry
from protocol.topics import Probe, probe_body

log = logging.getLogger("edge")

PROBE_RETRY = 0.1  # seconds between probes of a path or room not yet proven live
TICK = 0.05  # how often `tick` runs
TAIL_CHECK = 1.0  # seconds: how often rooms whose chats stopped get a tail probe
TAIL_TOKEN = 0  # room probes' tokens start at 1: 0 marks a tail probe


class BrokerPath:
    def __init__(
        self,
        instance_id: str,
        bus: Bus,
        rooms: RoomRegistry[Connection],
        continuity: Continuity[Connection],
        stats: Stats,
        *,
        probe_interval: float,
        probe_timeout: float,
    ) -> None:
        self._id = instance_id
        self._bus = bus
        self._rooms = rooms
        self._continuity = continuity
        self._stats = stats
        self.probes = ProbeClock(instance_id, probe_interval, probe_timeout, PROBE_RETRY)
        self._barriers: dict[int, asyncio.Event] = {}
        self._last_barrier = 0
        self._next_tail_check = 0.0
        bus.subscribe(self.probes.topic)

    def healthy(self) -> bool:
        return self.probes.healthy(time.monotonic())

    # Rooms.

    def subscribe(self, topic: bytes) -> None:
        self._bus.subscribe(topic)
        room = self._rooms.room(topic)
        if room is not None:
            self._probe_room(room, time.monotonic())

    def unsubscribe(self, topic: bytes) -> None:
        self._bus.unsubscribe(topic)

    def _probe_room(self, room: Room[Connection], now: float) -> None:
        token = self._rooms.probe_due(room, now, PROBE_RETRY)
        if token is not None:
            self._bus.publish(room.topic, probe_body(self._id, token))
            self._stats.probes_sent += 1

    # Probes coming back (from edge.fanout).

    def probe_returned(self, topic: bytes, probe: Probe) -> None:
        token = probe.token
        if topic != self.probes.topic:
            if probe.epoch is None or probe.top is None:
                return  # not stamped: not through a sequencer
            fx: Effects[Connection] = Effects()
            if token == TAIL_TOKEN:
                tailed = self._rooms.room(topic)
                if tailed is not None and tailed.live:
                    self._continuity.tail(tailed, probe.epoch, probe.top, time.monotonic(), fx)
                    apply(fx, self._bus, self._stats)
                return
            proven = self._rooms.probe_returned(topic, token)
            if proven is None:
                return
            room, waiting = proven
            # The probe's stamp is the stream at its place: every chat after it is newer.
            self._continuity.went_live(room, probe.epoch, probe.top, waiting, time.monotonic(), fx)
            apply(fx, self._bus, self._stats)
            return
        barrier = self._barriers.pop(token, None)
        if barrier is not None:
            barrier.set()
            return
        now = time.monotonic()
        if self.probes.health_probe_returned(token, now) and self.probes.last_rtt is not None:
            log.info("broker path live (round trip %.1f ms)", self.probes.last_rtt * 1000)
            # The path was broken (broker restart?): ZeroMQ resends subscriptions
            # on reconnect; probing every room proves each one made it.
            for room in self._rooms.mark_all_unverified():
                self._probe_room(room, now)

    def own_probe(self, body: bytes) -> Probe | None:
        return self.probes.own_probe(body)

    # Time and transport events.

    def tick(self) -> None:
        """Every TICK seconds: the health probe when due, and re-probe rooms still pending."""
        now = time.monotonic()
        was_healthy = self.probes.healthy(now - TICK)
        body = self.probes.health_probe_due(now)
        if body is not None:
            self._bus.publish(self.probes.topic, body)
            self._stats.probes_sent += 1
        if was_healthy and not self.probes.healthy(now):
            log.warning("broker path down: no probe back for %.1f s", self.probes.timeout)
        for room in self._rooms.pending():
            self._probe_room(room, now)
        if now >= self._next_tail_check:
            self._next_tail_check = now + TAIL_CHECK
            for room in self._continuity.gone_quiet():
                if room.live and self._rooms.room(room.topic) is room:
                    self._bus.publish(room.topic, probe_body(self._id, TAIL_TOKEN))
                    self._stats.probes_sent += 1

    def disconnected(self) -> None:
        """libzmq saw the broker connection drop: unhealthy until a probe returns."""
        if self.probes.last_seen is not None:
            log.warning("broker connection lost; chats refused until a probe returns")
        self.probes.path_lost()

    async def barrier(self, grace: float) -> bool:
        """Wait until everything the broker sent us before now has been fanned out.

        A probe travels the same pipe as the chats ahead of it, so once it
        comes back every earlier message has been delivered to the outboxes.
        """
        self._last_barrier -= 1  # negative tokens never clash with health probes
        token = self._last_barrier
        event = self._barriers[token] = asyncio.Event()
        self._bus.publish(self.probes.topic, probe_body(self._id, token))
        try:
            await asyncio.wait_for(event.wait(), grace)
            return True
        except TimeoutError:
            return False
        finally:
            self._barriers.pop(token, None)
