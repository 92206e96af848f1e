"""The room registry: which local connection is in which room, nothing else.

All membership state of an edge lives here and only this class changes it.
It decides when the edge must subscribe to a room's topic (first local
member) and unsubscribe (last local member gone), and owns each room's
subscription state: whether it is known to be live end to end, the token of
the probe that will prove it, and the `joined` replies that wait for it, so
that a `joined` reply is only sent once messages published into the room
will reach this edge.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, Generic, NamedTuple, TypeVar

from protocol.messages import Position
from protocol.topics import room_topic

M = TypeVar("M", bound=Hashable)


class JoinOutcome(Enum):
    JOINED = auto()  # room live: acknowledge now
    ALREADY = auto()  # already a member: acknowledge with where the stream is, replay nothing
    SUBSCRIBE = auto()  # first local member: subscribe, probe, acknowledge once live
    WAIT = auto()  # room's subscription not yet live: acknowledge once it is
    TOO_MANY_ROOMS = auto()  # refused, nothing changed


class LeaveOutcome(Enum):
    NOT_MEMBER = auto()
    LEFT = auto()
    UNSUBSCRIBE = auto()  # left, and it was the last local member


class JoinSpec(NamedTuple):
    """A join as asked: who (for its `joined` reply), and what it wants replayed."""

    connection_id: str
    history: int | None = None
    since: Position | None = None
    presence: bool = False  # the member also gets the room's presence events


@dataclass(slots=True)
class Replay(Generic[M]):
    """A member's join, answered once its history arrives."""

    member: M
    spec: JoinSpec
    epoch: str
    upto: int  # the room's position when the member joined: the replay ends here
    held: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, frame) after it
    # The stream restarted meanwhile: what is held since belongs to the new
    # epoch, whose offsets say nothing about `upto`: kept whole.
    resynced: bool = False
    barriers: int = 0  # queries asked again to let a repair finish first


@dataclass(slots=True)
class Repair:
    """A hole in a room's stream, being filled from history."""

    upto: int  # the last missing offset
    held: list[bytes] = field(default_factory=list)  # stamped chats that came after the hole


class Room(Generic[M]):
    __slots__ = ("epoch", "last", "live", "members", "probe_sent", "probe_token", "repair",
                 "replays", "room_id", "topic", "waiting", "watchers")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.topic = room_topic(room_id)
        self.members: set[M] = set()
        self.watchers: set[M] = set()  # members that joined with presence events on
        self.live = False
        # Members whose `joined` waits for liveness, with their join
        # (a dict: ordered, one reply per member however often it joined).
        self.waiting: dict[M, JoinSpec] = {}
        # The room's stream as delivered here (edge.continuity owns these):
        # its epoch (None until the first probe came back), the last offset
        # delivered, a hole being repaired, members whose replay is on its way.
        self.epoch: str | None = None
        self.last = 0
        self.repair: Repair | None = None
        self.replays: dict[M, Replay[Any]] = {}
        # The probe that proves this subscription live: a token per
        # subscription, so a probe left over from an earlier subscription of
        # the same room (or from before a broker restart) proves nothing.
        self.probe_token = 0  # 0: none issued yet
        self.probe_sent = float("-inf")


class RoomRegistry(Generic[M]):
    def __init__(self, max_rooms_per_member: int) -> None:
        self.max_rooms_per_member = max_rooms_per_member
        self._by_topic: dict[bytes, Room[M]] = {}
        self._by_id: dict[str, Room[M]] = {}
        self._memberships: dict[M, dict[str, Room[M]]] = {}
        self._pending: dict[bytes, Room[M]] = {}  # rooms not yet proven live
        self._last_token = 0

    # Queries.

    def __len__(self) -> int:
        return len(self._by_id)

    def room(self, topic: bytes) -> Room[M] | None:
        return self._by_topic.get(topic)

    def room_by_id(self, room_id: str) -> Room[M] | None:
        return self._by_id.get(room_id)

    def rooms(self) -> Iterator[Room[M]]:
        return iter(self._by_id.values())

    def rooms_of(self, member: M) -> Iterable[str]:
        return self._memberships.get(member, {}).keys()

    def is_member(self, member: M, room_id: str) -> bool:
        return room_id in self._memberships.get(member, {})

    def pending(self) -> list[Room[M]]:
        return list(self._pending.values())

    def pending_count(self) -> int:
        return len(self._pending)

    # Transitions.

    def join(
        self, member: M, room_id: str, spec: JoinSpec, path_up: bool = True
    ) -> JoinOutcome:
        """Add `member`; its join is kept until the room is live if it is not yet.

        While the broker path is down (`path_up` false) a join waits too: the
        room is re-verified once the path is back, and `joined` follows then.
        """
        mine = self._memberships.get(member)
        if mine is not None and room_id in mine:
            room = mine[room_id]
            if spec.presence:
                room.watchers.add(member)
            if member in room.replays:
                return JoinOutcome.WAIT  # its `joined` comes with the replay on its way
            if room.epoch is not None and member not in room.waiting:
                # Already live here: answered with where the stream is, and it
                # stays live (never held back again), whatever the path does.
                return JoinOutcome.ALREADY
            room.waiting.setdefault(member, spec)  # one `joined` answers every pending join
            return JoinOutcome.WAIT
        if mine is not None and len(mine) >= self.max_rooms_per_member:
            return JoinOutcome.TOO_MANY_ROOMS
        if self.max_rooms_per_member <= 0:
            return JoinOutcome.TOO_MANY_ROOMS
        existing = self._by_id.get(room_id)
        outcome = JoinOutcome.JOINED
        if existing is not None:
            room = existing
            if not room.live or not path_up:
                outcome = JoinOutcome.WAIT
        else:
            room = Room(room_id)
            self._by_id[room_id] = room
            self._by_topic[room.topic] = room
            self._pending[room.topic] = room
            outcome = JoinOutcome.SUBSCRIBE
        room.members.add(member)
        if spec.presence:
            room.watchers.add(member)
        if mine is None:
            mine = self._memberships[member] = {}
        mine[room_id] = room
        if outcome is not JoinOutcome.JOINED:
            room.waiting[member] = spec
        return outcome

    def leave(self, member: M, room_id: str) -> tuple[LeaveOutcome, Room[M] | None]:
        mine = self._memberships.get(member)
        if mine is None or room_id not in mine:
            return LeaveOutcome.NOT_MEMBER, None
        room = mine.pop(room_id)
        if not mine:
            del self._memberships[member]
        return self._remove(member, room), room

    def drop(self, member: M) -> list[Room[M]]:
        """Forget a connection; return the rooms left with no local member."""
        mine = self._memberships.pop(member, None)
        if not mine:
            return []
        return [
            room
            for room in mine.values()
            if self._remove(member, room) is LeaveOutcome.UNSUBSCRIBE
        ]

    def probe_due(self, room: Room[M], now: float, retry: float) -> int | None:
        """The token to probe a not-yet-live room with, if a probe is due (every `retry` s)."""
        if room.live or now - room.probe_sent < retry:
            return None
        if room.probe_token == 0:
            self._last_token += 1
            room.probe_token = self._last_token
        room.probe_sent = now
        return room.probe_token

    def probe_returned(
        self, topic: bytes, token: int
    ) -> tuple[Room[M], list[tuple[M, JoinSpec]]] | None:
        """A room probe came back: if it proves the current subscription, the room is
        live; return it and the joins now due."""
        room = self._by_topic.get(topic)
        if room is None or room.live or room.probe_token != token:
            return None  # unsubscribed meanwhile, already live, or a stale probe
        room.live = True
        room.probe_token = 0
        room.probe_sent = float("-inf")
        self._pending.pop(topic, None)
        waiting, room.waiting = room.waiting, {}
        return room, list(waiting.items())

    def mark_all_unverified(self, which: Callable[[bytes], bool] | None = None) -> list[Room[M]]:
        """After the broker path broke, every room (whose topic `which` accepts) must
        prove its subscription again."""
        rooms = [r for r in self._by_id.values() if which is None or which(r.topic)]
        for room in rooms:
            room.live = False
            room.probe_token = 0  # probes sent before the break prove nothing
            room.probe_sent = float("-inf")
            self._pending[room.topic] = room
        return rooms

    def _remove(self, member: M, room: Room[M]) -> LeaveOutcome:
        room.members.discard(member)
        room.watchers.discard(member)
        room.waiting.pop(member, None)
        room.replays.pop(member, None)
        if room.members:
            return LeaveOutcome.LEFT
        del self._by_id[room.room_id]
        del self._by_topic[room.topic]
        self._pending.pop(room.topic, None)
        return LeaveOutcome.UNSUBSCRIBE
