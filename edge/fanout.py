"""What arrives from the broker, out to this edge's members.

Fan-out never awaits: each chat becomes one WebSocket frame, built once and
shared by every member of its room; each member touched by a batch gets one
write (`Connection.send`, which closes it as slow if its outbox overflows).
Probes that come back are handed to `edge.liveness`.
"""

from __future__ import annotations

from edge.bus import Batch
from edge.connection import Connection
from edge.liveness import BrokerPath
from edge.metrics import Stats
from edge.rooms import RoomRegistry
from protocol.frames import text_frame
from protocol.topics import PROBE_MARK


class Fanout:
    def __init__(self, rooms: RoomRegistry[Connection], path: BrokerPath, stats: Stats) -> None:
        self._rooms = rooms
        self._path = path
        self._stats = stats

    def on_batch(self, batch: Batch) -> None:
        room_of = self._rooms.room
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
                    self._probe(topic, body)
                    continue
                frame = text_frame(body)
                count = 1
            else:  # several chats of one room, published together
                chunks = []
                for body in parts[1:]:
                    if body[:1] == PROBE_MARK:
                        self._probe(topic, body)
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
        self._stats.messages_out += delivered
        for conn, frames in touched.items():
            conn.send(frames[0] if len(frames) == 1 else b"".join(frames))

    def _probe(self, topic: bytes, body: bytes) -> None:
        token = self._path.own_probe(body)
        if token is not None:  # else another edge's probe of a room we share
            self._path.probe_returned(topic, token)
