"""A client's frame, carried out: the pure handler decides, this executes.

`edge.session.FrameHandler` turns a frame into intents; each intent is done
here on real things: a reply written to the connection, a chat queued for
the broker, a room subscribed (and probed until live) or unsubscribed, the
connection closed.
"""

from __future__ import annotations

import time

from edge.acks import PendingAcks
from edge.auth import Deadlines
from edge.bus import Bus
from edge.connection import Connection
from edge.continuity import Continuity, Effects
from edge.delivery import apply
from edge.liveness import BrokerPath
from edge.metrics import Stats
from edge.presence import PendingListings
from edge.publishing import PublishQueue
from edge.rooms import RoomRegistry
from edge.session import (
    Admit,
    Ask,
    Await,
    Close,
    Disconnect,
    FrameHandler,
    Intent,
    Publish,
    Reply,
    Report,
    Subscribe,
    Unsubscribe,
)
from protocol.codec import encode_error
from protocol.errors import ErrorCode
from protocol.frames import text_frame
from protocol.presence import WhoQuery, who_part
from protocol.stream import keyed_part


class Dispatcher:
    def __init__(
        self,
        handler: FrameHandler[Connection],
        publishes: PublishQueue,
        path: BrokerPath,
        continuity: Continuity[Connection],
        acks: PendingAcks[Connection],
        bus: Bus,
        stats: Stats,
        join_timeout: float,
    ) -> None:
        self._handler = handler
        self._join_timeout = join_timeout  # --join-timeout: a join waits this long at most
        self._rooms: RoomRegistry[Connection] = handler.registry
        self._publishes = publishes
        self._path = path
        self._continuity = continuity
        self._acks = acks
        self._bus = bus
        self._origin = path.probes.topic  # where the sequencer sends this edge's acks
        self._stats = stats
        # Joins waiting for their room: answered `unavailable` if not live in time.
        self._join_deadlines: Deadlines[tuple[Connection, bytes]] = Deadlines()
        self.listings: PendingListings[Connection] = PendingListings()

    # edge.connection.Receiver

    def message(self, conn: Connection, data: bytes) -> None:
        self._execute(conn, self._handler.handle(conn, conn.client, data))

    def binary(self, conn: Connection) -> None:
        self._execute(conn, self._handler.binary_frame())

    def tick(self, now: float) -> None:
        for conn, topic in self._join_deadlines.pop_due(now):
            self._execute(conn, self._handler.join_timed_out(conn, conn.client, topic))
        for conn in self.listings.expire(now):
            conn.send(text_frame(encode_error(
                ErrorCode.UNAVAILABLE, "no answer from the broker in time: ask again"
            )))
            self._stats.errors[ErrorCode.UNAVAILABLE] += 1

    def leave_rooms(self, conn: Connection, why: Disconnect) -> None:
        """A connection ended: out of every room, unsubscribing those left empty.

        Only the client's close handshake is a clean leave for presence; any
        other end starts the user's grace (it may be back in a moment).
        """
        abrupt = why is not Disconnect.CLIENT
        self._execute(conn, self._handler.disconnect(conn, conn.client, abrupt))

    def _execute(self, conn: Connection, intents: list[Intent]) -> None:
        for intent in intents:
            match intent:
                case Publish(topic, body, room_id, msg_id, key):
                    if key is None or msg_id is None:
                        self._publishes.put(topic, body)
                    else:
                        self._acks.add(conn, room_id, key, msg_id, time.monotonic())
                        self._publishes.put(topic, keyed_part(self._origin, key, body))
                case Admit(topic, spec, again):
                    room = self._rooms.room(topic)
                    if room is not None:
                        fx: Effects[Connection] = Effects()
                        if again:
                            self._continuity.rejoined(room, conn, spec, fx)
                        else:
                            self._continuity.join(room, conn, spec, time.monotonic(), fx)
                        apply(fx, self._bus, self._stats)
                case Reply(frame, error):
                    conn.send(text_frame(frame))
                    if error is not None:
                        self._stats.errors[error] += 1
                case Subscribe(topic):
                    self._path.subscribe(topic)
                case Await(topic):
                    self._join_deadlines.set((conn, topic), time.monotonic() + self._join_timeout)
                case Unsubscribe(topic):
                    self._path.unsubscribe(topic)
                case Report(topic, part):
                    self._publishes.put(topic, part, counted=False)
                case Ask(topic, room_id, cursor):
                    request_id = self.listings.add(conn, time.monotonic())
                    query = WhoQuery(self._origin, request_id, room_id, cursor)
                    self._publishes.put(topic, who_part(query), counted=False)
                case Close(code, reason, why):
                    conn.close(code, reason, why)
