"""What an edge tells rooms' presence owners about its members. Pure.

The owner of a room's presence is the room's broker (`broker.presence`).
This tally is the edge's side: per room, per user, its connections here and
their names, and which members want presence events. Every membership
change gives a `Report` carrying the user's state after it (absolute, so
one lost is set right by the next heartbeat), to be published on the room's
topic through the same queue as the room's chats: a join reported before
the user's first chat, a leave after its last. `heartbeat` gives an
owner's heartbeat parts, the whole membership in the rooms it owns.

A connection is counted once per room however often it joins; a repeated
join or a leave of a room it is not in reports nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from protocol.presence import Change, Report, RoomMembers, heartbeat_parts

M = TypeVar("M", bound=Hashable)
LISTING_TIMEOUT = 5.0  # seconds a `presence` request waits for its owner's answer


class _Room:
    __slots__ = ("users", "watchers")

    def __init__(self) -> None:
        # user -> its connections here, oldest first: connection id -> name
        self.users: dict[str, dict[str, str]] = {}
        self.watchers: set[str] = set()  # connection ids that joined with presence: true


class PresenceTally:
    def __init__(self, edge: str, incarnation: str) -> None:
        self.edge = edge  # stable across restarts: the edge's name, or host:port
        self.incarnation = incarnation  # new at every start: the instance id
        self._rooms: dict[str, _Room] = {}
        self._round = 0

    def joined(self, connection_id: str, room_id: str, user: str, name: str,
               watch: bool) -> Report | None:
        """A connection became a member of a room; None if it already was."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room()
        conns = room.users.get(user)
        if conns is None:
            conns = room.users[user] = {}
        elif connection_id in conns:
            return None
        conns[connection_id] = name
        if watch:
            room.watchers.add(connection_id)
        return Report(self.edge, self.incarnation, Change.JOINED, room_id, user, connection_id,
                      len(conns), name, len(room.watchers))

    def left(self, connection_id: str, room_id: str, user: str, abrupt: bool) -> Report | None:
        """A member left (a `leave`, a close handshake) or dropped abruptly (`abrupt`)."""
        room = self._rooms.get(room_id)
        conns = None if room is None else room.users.get(user)
        if room is None or conns is None or connection_id not in conns:
            return None
        name = conns.pop(connection_id)
        room.watchers.discard(connection_id)
        if conns:
            name = next(reversed(conns.values()))  # the newest connection left is the name
        else:
            del room.users[user]
            if not room.users:
                del self._rooms[room_id]
        change = Change.DROPPED if abrupt else Change.LEFT
        return Report(self.edge, self.incarnation, change, room_id, user, connection_id,
                      len(conns), name, len(room.watchers))

    def members(self, rooms: Iterable[str] | None = None) -> list[RoomMembers]:
        """The membership in `rooms` (all rooms: None), as a heartbeat lists it."""
        chosen = self._rooms if rooms is None else {r: self._rooms[r] for r in rooms
                                                    if r in self._rooms}
        return [
            RoomMembers(room_id, len(room.watchers),
                        {user: (len(conns), next(reversed(conns.values())))
                         for user, conns in room.users.items()})
            for room_id, room in chosen.items()
        ]

    def heartbeat(self, owns: Callable[[str], bool] = lambda room_id: True) -> list[bytes]:
        """The next heartbeat's parts for the owner of the rooms `owns` accepts."""
        self._round += 1
        rooms = [r for r in self._rooms if owns(r)]
        return heartbeat_parts(self.edge, self.incarnation, self._round, self.members(rooms))


class PendingListings(Generic[M]):
    """`presence` requests sent to rooms' owners, by request id, until answered.

    One not answered within `timeout` (the broker path broke) gets
    `unavailable` instead; a late answer is dropped.
    """

    def __init__(self, timeout: float = LISTING_TIMEOUT) -> None:
        self.timeout = timeout
        self._asked: dict[int, tuple[M, float]] = {}
        self._last = 0

    def __len__(self) -> int:
        return len(self._asked)

    def add(self, member: M, now: float) -> int:
        self._last += 1
        self._asked[self._last] = (member, now + self.timeout)
        return self._last

    def answered(self, request_id: int) -> M | None:
        asked = self._asked.pop(request_id, None)
        return None if asked is None else asked[0]

    def expire(self, now: float) -> list[M]:
        # Deadlines follow request ids (one timeout): the oldest come first.
        late = []
        for request_id, (member, deadline) in list(self._asked.items()):
            if deadline > now:
                break
            del self._asked[request_id]
            late.append(member)
        return late
