"""Is the path through the broker working, and is each room's subscription live?

"The socket is connected" proves little, so both are proven by probes that
travel the same pipe as the chats: the path is healthy while the edge's own
health probes come back within `--probe-timeout`; a room's subscription is
live once a probe published on the room's topic has come back, and only then
do its members get `joined`. When the path breaks and comes back (a broker
restart), ZeroMQ resends the subscriptions, and every room proves itself
again. A barrier probe marks "everything the broker sent before now has been
fanned out" for a graceful shutdown.

With several broker shards each shard's path has its own health (its own
`ProbeClock`, its probes published at that shard, returned on the edge's
topic there): a shard that breaks makes only its own rooms unavailable and
re-prove themselves, and the edge is healthy while any shard is.

The health bookkeeping is `edge.probes.ProbeClock`; each room's subscription
state (live, probe token, waiting replies) is `edge.rooms.RoomRegistry`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge.bus import Bus
from edge.connection import Connection
from edge.continuity import Continuity, Effects
from edge.delivery import apply
from edge.metrics import Stats
from edge.probes import ProbeClock
from edge.rooms import Room, RoomRegistry
from protocol.topics import Probe, probe_body, room_topic

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
        # One clock per shard; all of them probe on the edge's own topic.
        self.shards = [
            ProbeClock(instance_id, probe_interval, probe_timeout, PROBE_RETRY, bus.shards)
            for _ in range(bus.shards)
        ]
        self.probes = self.shards[0]
        # Per shard: why it last refused this edge, as it said, and when (None: never).
        self.refusals: list[tuple[str, float] | None] = [None] * bus.shards
        self.topic = self.probes.topic
        self._barriers: dict[int, asyncio.Event] = {}
        self._last_barrier = 0
        self._next_tail_check = 0.0
        bus.subscribe(self.topic)

    def healthy(self) -> bool:
        """Any shard reachable (the edge serves the rooms of those that are)."""
        now = time.monotonic()
        return any(clock.healthy(now) for clock in self.shards)

    def shard_healthy(self, shard: int) -> bool:
        return self.shards[shard].healthy(time.monotonic())

    def room_healthy(self, room_id: str) -> bool:
        """Is the path to the shard that owns `room_id` live."""
        if len(self.shards) == 1:
            return self.probes.healthy(time.monotonic())
        shard = self._bus.shard_of_topic(room_topic(room_id))
        return shard is not None and self.shard_healthy(shard)

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

    def probe_returned(self, topic: bytes, probe: Probe, shard: int = 0) -> None:
        token = probe.token
        if topic != self.topic:
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
        clock = self.shards[shard]
        if clock.health_probe_returned(token, now) and clock.last_rtt is not None:
            log.info("broker path live%s (round trip %.1f ms)", self._which(shard),
                     clock.last_rtt * 1000)
            # The path was broken (broker restart?): ZeroMQ resends subscriptions
            # on reconnect; probing every room of the shard proves each one made it.
            for room in self._rooms.mark_all_unverified(self._owned_by(shard)):
                self._probe_room(room, now)

    def _which(self, shard: int) -> str:
        return f" to shard {shard}" if len(self.shards) > 1 else ""

    def _owned_by(self, shard: int) -> Callable[[bytes], bool] | None:
        if len(self.shards) == 1:
            return None
        return lambda topic: self._bus.shard_of_topic(topic) == shard

    def refused(self, shard: int, text: str) -> None:
        """A shard refused something of ours: a misconfiguration, not an outage."""
        last = self.refusals[shard]
        if last is None or last[0] != text or time.monotonic() - last[1] > 60:
            log.error("broker shard %d refused this edge: %s", shard, text)
        self.refusals[shard] = (text, time.monotonic())

    def own_probe(self, body: bytes) -> Probe | None:
        return self.probes.own_probe(body)

    # Time and transport events.

    def tick(self) -> None:
        """Every TICK seconds: the health probe when due, and re-probe rooms still pending."""
        now = time.monotonic()
        for shard, clock in enumerate(self.shards):
            was_healthy = clock.healthy(now - TICK)
            body = clock.health_probe_due(now)
            if body is not None:
                self._bus.publish(self.topic, body, shard)
                self._stats.probes_sent += 1
            if was_healthy and not clock.healthy(now):
                log.warning("broker path down%s: no probe back for %.1f s", self._which(shard),
                            clock.timeout)
        for room in self._rooms.pending():
            self._probe_room(room, now)
        if now >= self._next_tail_check:
            self._next_tail_check = now + TAIL_CHECK
            for room in self._continuity.gone_quiet():
                if room.live and self._rooms.room(room.topic) is room:
                    self._bus.publish(room.topic, probe_body(self._id, TAIL_TOKEN))
                    self._stats.probes_sent += 1

    def disconnected(self, shard: int = 0) -> None:
        """libzmq saw a shard's connection drop: unhealthy until a probe returns."""
        clock = self.shards[shard]
        if clock.last_seen is not None:
            log.warning("broker connection lost%s; its rooms' chats refused until a probe "
                        "returns", self._which(shard))
        clock.path_lost()

    async def barrier(self, grace: float) -> bool:
        """Wait until everything the broker sent us before now has been fanned out.

        A probe travels the same pipe as the chats ahead of it, so once it
        comes back every earlier message has been delivered to the outboxes.
        """
        now = time.monotonic()
        events: dict[int, asyncio.Event] = {}
        for shard, clock in enumerate(self.shards):
            if not clock.healthy(now):
                continue  # nothing comes from a shard that is down
            self._last_barrier -= 1  # negative tokens never clash with health probes
            events[self._last_barrier] = self._barriers[self._last_barrier] = asyncio.Event()
            self._bus.publish(self.topic, probe_body(self._id, self._last_barrier), shard)
        try:
            async with asyncio.timeout(grace):
                for event in events.values():
                    await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            for token in events:
                self._barriers.pop(token, None)
