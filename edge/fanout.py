"""What arrives from the broker, out to this edge's members.

Fan-out never awaits: each chat becomes one WebSocket frame, built once and
shared by every member of its room; each member touched by a batch gets one
write (`Connection.send`, which closes it as slow if its outbox overflows).
`edge.continuity` checks each chat's offset on the way (the common case, the
next offset, costs a comparison). What comes on this edge's own topic is for
the edge itself: its probes (to `edge.liveness`), ack notes for chats its
clients sent with a msgId, and replies to its history queries.
"""

from __future__ import annotations

import time

import msgspec

from edge.acks import PendingAcks
from edge.bus import Batches, Bus
from edge.connection import Connection
from edge.continuity import Continuity, Effects
from edge.delivery import apply
from edge.liveness import BrokerPath
from edge.metrics import Stats
from edge.presence import PendingListings
from edge.rooms import RoomRegistry
from protocol.frames import text_frame
from protocol.presence import EVENT_MARK, LISTING_MARK, read_listing
from protocol.shards import REFUSAL_MARK, read_refusal
from protocol.stream import ACK_MARK, REPLY_MARK, read_ack, read_reply
from protocol.topics import PROBE_MARK

_SPECIAL = (PROBE_MARK, EVENT_MARK)  # parts on a room topic that are not chats


class Fanout:
    def __init__(
        self,
        rooms: RoomRegistry[Connection],
        continuity: Continuity[Connection],
        acks: PendingAcks[Connection],
        path: BrokerPath,
        bus: Bus,
        stats: Stats,
        listings: PendingListings[Connection],
    ) -> None:
        self._rooms = rooms
        self._listings = listings
        self._continuity = continuity
        self._acks = acks
        self._path = path
        self._bus = bus
        self._stats = stats
        self._own_topic = path.probes.topic

    def on_batch(self, batches: Batches) -> None:
        """What the shards' SUB sockets brought, each shard's in its order.

        One pass and one write per member for all of it: a room's chats come
        from one shard only, so reading shards in any order keeps every
        room's order.
        """
        room_of = self._rooms.room
        chats = self._continuity.chats
        own_topic = self._own_topic
        fx: Effects[Connection] = Effects()
        now = time.monotonic()
        for shard, batch in batches:
            for parts in batch:
                if len(parts) < 2:
                    continue
                topic = parts[0]
                if topic == own_topic:
                    self._own(topic, parts[1:], now, fx, shard)
                    continue
                bodies = parts[1:]
                if any(body[:1] in _SPECIAL for body in bodies):
                    self._mixed(topic, bodies, now, fx)
                    continue
                room = room_of(topic)
                if room is None:
                    continue  # unsubscribed a moment ago
                chats(room, bodies, now, fx)
        apply(fx, self._bus, self._stats)

    def _mixed(self, topic: bytes, bodies: list[bytes], now: float,
               fx: Effects[Connection]) -> None:
        """A room's parts with probes or presence events among its chats, in order."""
        if any(body[:1] == PROBE_MARK for body in bodies):
            bodies = self._probes(topic, bodies)
        room = self._rooms.room(topic)
        if room is None or not bodies:
            return
        run: list[bytes] = []
        for body in bodies:
            if body[:1] != EVENT_MARK:
                run.append(body)
                continue
            if run:
                self._continuity.chats(room, run, now, fx)
                run = []
            # To the members that asked for events and have their `joined`.
            watchers = [m for m in room.watchers
                        if m not in room.waiting and m not in room.replays]
            if watchers:
                fx.out.append((watchers, [text_frame(body[1:])]))
        if run:
            self._continuity.chats(room, run, now, fx)

    def _probes(self, topic: bytes, bodies: list[bytes]) -> list[bytes]:
        """Hand the probes among a room's parts to liveness; return the chats."""
        rest = []
        for body in bodies:
            if body[:1] != PROBE_MARK:
                rest.append(body)
                continue
            probe = self._path.own_probe(body)
            if probe is not None:  # else another edge's probe of a room we share
                self._path.probe_returned(topic, probe)
        return rest

    def _own(self, topic: bytes, parts: list[bytes], now: float, fx: Effects[Connection],
             shard: int) -> None:
        for part in parts:
            kind = part[:1]
            try:
                if kind == PROBE_MARK:
                    probe = self._path.own_probe(part)
                    if probe is not None:
                        self._path.probe_returned(topic, probe, shard)
                elif kind == ACK_MARK:
                    for conn, frame in self._acks.noted(read_ack(part)):
                        fx.member_frame(conn, text_frame(frame))
                elif kind == REPLY_MARK:
                    self._continuity.reply(read_reply(part), now, fx)
                elif kind == REFUSAL_MARK:
                    self._path.refused(shard, read_refusal(part))
                elif kind == LISTING_MARK:
                    listing = read_listing(part)
                    asker = self._listings.answered(listing.request_id)
                    if asker is not None:
                        fx.member_frame(asker, text_frame(listing.frame))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not from a sequencer that speaks this protocol
