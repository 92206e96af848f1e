"""Chats with a msgId whose ack is owed to their sender (protocol v2 section 5).

The room's sequencer answers each such chat with an ack note on this edge's
topic (`protocol.stream.AckNote`), duplicate or not; the sender gets an `ack`
frame. A chat whose note does not come within `ACK_TIMEOUT` (the broker path
is down, or the message was lost on it) gets an `unavailable` error that
names its msgId instead, and so does a chat the broker refused because it
could not store it (a `refused` note): a client following the protocol resends it, and the
sequencer's dedupe window makes that safe.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

from protocol.codec import encode_ack, encode_error
from protocol.errors import ErrorCode
from protocol.stream import AckNote

M = TypeVar("M", bound=Hashable)

ACK_TIMEOUT = 5.0


class Owed(NamedTuple, Generic[M]):
    member: M
    msg_id: str
    deadline: float


class PendingAcks(Generic[M]):
    def __init__(self, timeout: float = ACK_TIMEOUT) -> None:
        self.timeout = timeout
        self._owed: dict[tuple[str, str], list[Owed[M]]] = {}  # (room, key) -> senders
        # Deadlines in the order they were set: with one timeout, also their order.
        self._order: deque[tuple[float, str, str]] = deque()

    def __len__(self) -> int:
        return len(self._owed)

    def add(self, member: M, room_id: str, key: str, msg_id: str, now: float) -> None:
        deadline = now + self.timeout
        self._owed.setdefault((room_id, key), []).append(Owed(member, msg_id, deadline))
        self._order.append((deadline, room_id, key))

    def noted(self, note: AckNote) -> list[tuple[M, bytes]]:
        """The sequencer's note for a chat: the ack frames now due, to whom."""
        owed = self._owed.get((note.room_id, note.key))
        if not owed:
            return []  # from another edge's send of the same msgId, or too late
        # One note per send, in the order the sends reached the sequencer:
        # the first answers the first, and a repeat gets its own `duplicate`.
        o = owed.pop(0)
        if not owed:
            del self._owed[(note.room_id, note.key)]
        if note.refused:
            return [(o.member, encode_error(
                ErrorCode.UNAVAILABLE,
                "the broker could not store it: send it again later (same msgId)",
                o.msg_id,
            ))]
        return [(o.member, encode_ack(note.room_id, o.msg_id, note.epoch, note.offset,
                                      note.duplicate))]

    def expire(self, now: float) -> list[tuple[M, bytes]]:
        """`unavailable` errors for the chats whose note did not come in time."""
        out: list[tuple[M, bytes]] = []
        order = self._order
        while order and order[0][0] <= now:
            _, room_id, key = order.popleft()
            owed = self._owed.get((room_id, key))
            if not owed:
                continue
            late = [o for o in owed if o.deadline <= now]
            rest = [o for o in owed if o.deadline > now]
            if rest:
                self._owed[(room_id, key)] = rest
            else:
                del self._owed[(room_id, key)]
            out += [
                (o.member, encode_error(
                    ErrorCode.UNAVAILABLE,
                    "no acknowledgement from the broker in time: send it again (same msgId)",
                    o.msg_id,
                ))
                for o in late
            ]
        return out
