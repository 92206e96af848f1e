"""Presence: who is in each room this broker owns, merged per user. Pure.

The owner of a room's presence is the room's sequencer, so `presence_join`
and `presence_leave` are published on the room's topic in order with its
chats: a join report travels the same pipe as the user's first chat and is
handled before it, a leave report after its last chat. Rooms may be spread
over several brokers; each owns the presence of its own rooms and needs
nothing from the others.

What the owner holds, per room: per edge, per user, the user's connection
count there and the name of its newest connection there (`shares`); merged
per user, a `Member`: live connections, name, grace deadline. Edges report
each change with the user's state after it (`protocol.presence.Report`) and
heartbeat their whole membership (`Heartbeat`); both are absolute, so a
lost report is set right by the next heartbeat.

The rules (protocol v2 section 7):

- A user's first connection in a room publishes `presence_join`; its last
  leaving publishes `presence_leave`, at once when it left cleanly, after
  the grace when it dropped abruptly (or vanished from its edge's
  heartbeat, or its edge stopped heartbeating), unless the user has a
  connection again by then. Several connections join once and leave once.
  While any of a user's drops is in its grace, its leave waits for it: a
  blip followed by a clean leave of another device is still quiet.
- An edge silent for `edge_timeout` is dead: its connections dropped
  abruptly at that moment, so its users leave within edge_timeout + grace
  of its death, plus a sweep's delay for each (6 + 5 + 2 s with the
  broker's one-second sweeps, inside the contract's grace + 10 s).
- A new incarnation of an edge (it restarted) replaces the old one at once:
  the old connections dropped abruptly, and anything from the old
  incarnation that arrives later is ignored. Nothing of it resurfaces.
- After the owner starts (a restart included), for `rebuild` seconds:
  heartbeats add members without publishing joins (they are already known to
  everyone: nobody saw them leave), and leaves wait for the window's end,
  since a user's other connections may be on an edge that has not
  heartbeated yet. A join reported meanwhile is published, so a user
  present before the restart may be announced again; never a leave then a
  join.
- Events are published only while someone listens (a member that joined
  with `presence: true`, counted per edge as `watchers`), and only for
  rooms that have never held more than their events limit
  (`events_max_members`, or the first matching `events_rules` pattern) since
  their presence began: a room that grew past it stays quiet until it is
  empty, and its listing says `events: false`.
- A listing is one page of at most `page_users` users (fewer when their
  ids and names pass `page_chars` characters) in code point order of user
  id, and a cursor for the next page: the page's last user id, opaque to
  clients. A page starts after its cursor whether or not that user is still
  there, so paging goes on across joins and leaves: a user who joins behind
  the cursor, or leaves ahead of it, is missed by that pass, as the events
  in between tell.

Cost: every member costs `MEMBER_BYTES` with user and name of 16 ASCII
characters (measured: tests/unit/test_presence.py), at most
`MEMBER_BYTES_MAX` with 64 characters of any script; at most `max_members`
are held (beyond it, new users are not tracked and `over_budget` counts
them). Nothing is spent per chat.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import NamedTuple

import msgspec

from chatconfig import PresenceRules
from protocol.codec import encode_presence, encode_presence_join, encode_presence_leave
from protocol.identity import valid_name, valid_user
from protocol.presence import (
    EDGE_TIMEOUT,
    REPORT_MARK,
    WHO_MARK,
    Change,
    Heartbeat,
    Listing,
    Report,
    RoomMembers,
    event_part,
    listing_part,
    read_heartbeat,
    read_report,
    read_who,
)
from protocol.topics import room_topic

GRACE = 5.0  # --presence-grace: seconds an abruptly dropped user stays
# A `presence` frame holds at most PAGE_USERS users, and stops early once
# their user ids and names reach PAGE_CHARS characters: at most ~1000 x 70 B
# with 16-character ASCII names, and never much above 4 x PAGE_CHARS bytes
# whatever the names (within the edge's 1 MiB outbox).
PAGE_USERS = 1000
PAGE_CHARS = 64 * 1024
MAX_MEMBERS = 1_000_000  # per owner, all rooms together
# What one member (one room, one edge) costs, its user and name included,
# counted high: measured 310-345 B with 16-character ASCII strings, 840-880 B with
# 64 characters outside the BMP (tests/unit/test_presence.py). A user with
# connections on more edges costs ~130 B more per edge.
MEMBER_BYTES = 400
MEMBER_BYTES_MAX = 1000
RETIRED_KEPT = 1024  # old incarnations remembered, to ignore their late messages


class PresenceLimits(NamedTuple):
    grace: float = GRACE
    edge_timeout: float = EDGE_TIMEOUT  # --presence-edge-timeout
    # --presence-rebuild: after a start, heartbeats rebuild quietly and leaves wait
    rebuild: float = EDGE_TIMEOUT
    events_max_members: int = 0  # 0: no limit
    # (room id glob, max members; 0 no limit), the first match overriding
    # events_max_members: quiet big rooms by name.
    events_rules: tuple[tuple[str, int], ...] = ()
    page_users: int = PAGE_USERS
    page_chars: int = PAGE_CHARS
    max_members: int = MAX_MEMBERS

    @classmethod
    def from_rules(cls, rules: PresenceRules) -> PresenceLimits:
        """The limits the broker's settings (`--presence-*`) set."""
        return cls(
            grace=rules.presence_grace, edge_timeout=rules.presence_edge_timeout,
            rebuild=rules.presence_rebuild, events_max_members=rules.presence_events_max_members,
            events_rules=rules.events_rules(),
        )

    def events_max(self, room_id: str) -> int:
        for pattern, limit in self.events_rules:
            if fnmatchcase(room_id, pattern):
                return limit
        return self.events_max_members


class Event(NamedTuple):
    room_id: str
    user: str
    name: str | None  # None: a leave

    def frame(self) -> bytes:
        """The frame as the room's watching members receive it."""
        if self.name is None:
            return encode_presence_leave(self.room_id, self.user)
        return encode_presence_join(self.room_id, self.user, self.name)


class Page(NamedTuple):
    users: list[tuple[str, str, int]]  # (user, name, connections), in user order
    next: str | None  # the cursor of the next page; None: this is the last
    events: bool  # presence events are published for the room


class Output(NamedTuple):
    forward: list[bytes]  # event parts to publish on the part's room topic, in order
    notes: list[tuple[bytes, bytes]]  # (topic, part): listings, events of other rooms


class Member:
    """A user in a room, merged over its connections on every edge."""

    __slots__ = ("deadline", "held", "live", "name", "name_edge")

    def __init__(self, name: str, name_edge: str, live: int) -> None:
        self.name = name  # its newest connection's
        self.name_edge = name_edge  # the edge that connection is on
        self.live = live  # connections, over every edge
        # Connections dropped abruptly, counted while the user has no live
        # one (section 7: "counts only until the same user has another").
        self.held = 0
        self.deadline: float | None = None  # the latest grace still running


class RoomPresence:
    __slots__ = ("events", "events_max", "room_id", "shares", "sorted", "topic", "users",
                 "watchers", "watching")

    def __init__(self, room_id: str, events_max: int) -> None:
        self.room_id = room_id
        self.topic = room_topic(room_id)
        self.users: dict[str, Member] = {}
        # edge -> user -> (connections on that edge, name of the newest there)
        self.shares: dict[str, dict[str, tuple[int, str]]] = {}
        self.watchers: dict[str, int] = {}  # edge -> its members with events on
        self.watching = 0
        self.events_max = events_max
        self.events = True  # off for good once the room outgrew events_max
        self.sorted: list[str] | None = None  # user ids in order, made when listed


class EdgeState:
    __slots__ = ("heard", "id", "incarnation", "next_part", "rooms", "round", "seen", "whole")

    def __init__(self, edge_id: str, incarnation: str, heard: float) -> None:
        # The one copy of the id that members and shares refer to, not one per report.
        self.id = edge_id
        self.incarnation = incarnation
        self.heard = heard
        self.rooms: set[str] = set()  # rooms where it has members or watchers
        # The heartbeat round being read: its rooms so far, whether no part was missed.
        self.round = -1
        self.next_part = 0
        self.seen: set[str] = set()
        self.whole = False


class PresenceOwner:
    """The presence of every room this broker owns."""

    def __init__(self, limits: PresenceLimits, now: float) -> None:
        self.limits = limits
        self.rebuild_until = now + limits.rebuild
        self._rooms: dict[str, RoomPresence] = {}
        self._edges: dict[str, EdgeState] = {}
        self._retired: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._graces: list[tuple[float, str, str]] = []  # (deadline, room, user), lazily cleaned
        self.members = 0
        self.malformed = 0  # parts, entries or ids that break the rules: ignored
        self.over_budget = 0  # users not tracked: max_members reached
        self.stale = 0  # messages from an incarnation already replaced

    def held_bytes(self) -> int:
        """What the members cost, counted high for the 16-character ids measured."""
        return self.members * MEMBER_BYTES

    def room(self, room_id: str) -> RoomPresence | None:
        return self._rooms.get(room_id)

    def edges(self) -> list[str]:
        return list(self._edges)

    # What edges send.

    def report(self, report: Report, now: float) -> list[Event]:
        out: list[Event] = []
        edge = self._edge(report.edge, report.incarnation, now, out)
        if edge is None:
            return out
        room = self._room(report.room_id)
        self._watch(room, edge, report.watchers)
        if (report.count <= 0 and now < self.rebuild_until and report.user not in room.users
                and valid_user(report.user) and valid_name(report.name)):
            # A leave of a user this owner has not heard of yet: it started a
            # moment ago, and the user may be listed by a heartbeat still on
            # its way (from another edge). Members saw the user before the
            # restart: the leave is held to the rebuild's end, then published
            # unless a heartbeat brought the user back.
            self._hold_unknown_leave(room, edge, report.user, report.name)
            self._tidy(room)
            return out
        abrupt = report.change is Change.DROPPED
        self._set(room, edge, report.user, max(report.count, 0), report.name,
                  abrupt, now, out)
        self._tidy(room)
        return out

    def heartbeat(self, beat: Heartbeat, now: float) -> list[Event]:
        out: list[Event] = []
        edge = self._edge(beat.edge, beat.incarnation, now, out)
        if edge is None:
            return out
        if beat.part == 0:
            edge.round, edge.seen, edge.whole = beat.round, set(), True
        elif beat.round != edge.round or beat.part != edge.next_part:
            edge.round, edge.whole = beat.round, False  # a part was lost: remove nothing
        edge.next_part = beat.part + 1
        quiet = now < self.rebuild_until
        for members in beat.rooms:
            edge.seen.add(members.room_id)
            self._reconcile(edge, members, now, quiet, out)
        if beat.part == beat.parts - 1:
            if edge.whole:
                for room_id in edge.rooms - edge.seen:  # the edge holds no one there any more
                    self._reconcile(edge, RoomMembers(room_id, 0, {}), now, quiet, out)
            edge.seen = set()
        return out

    def expire(self, now: float) -> list[Event]:
        """Dead edges' connections dropped; leaves whose grace is over."""
        out: list[Event] = []
        for edge_id, edge in list(self._edges.items()):
            if now - edge.heard >= self.limits.edge_timeout:
                del self._edges[edge_id]
                self._drop_edge(edge, now, out)
        graces = self._graces
        while graces and graces[0][0] <= now:
            _, room_id, user = heapq.heappop(graces)
            room = self._rooms.get(room_id)
            member = None if room is None else room.users.get(user)
            if room is None or member is None or member.deadline is None or member.deadline > now:
                continue  # gone, back, or its grace was extended: another entry stands
            member.deadline = None
            member.held = 0
            if member.live == 0:
                self._remove(room, user, out)
                self._tidy(room)
        return out

    # What members ask.

    def listing(self, room_id: str, cursor: str | None = None) -> Page:
        """A page of the room's users after `cursor`, at most `page_users` of them."""
        room = self._rooms.get(room_id)
        if room is None:
            return Page([], None, True)
        order = room.sorted
        if order is None:
            order = room.sorted = sorted(room.users)
        start = 0 if cursor is None else bisect_right(order, cursor)
        users = room.users
        page: list[tuple[str, str, int]] = []
        chars = 0
        for user in order[start : start + self.limits.page_users]:
            member = users[user]
            chars += len(user) + len(member.name)
            if chars > self.limits.page_chars and page:
                break
            page.append((user, member.name, member.live or max(member.held, 1)))
        more = start + len(page) < len(order)
        return Page(page, page[-1][0] if more else None, room.events)

    # Bytes in, bytes out: what the broker's loop calls.

    def handle(self, room_id: str, part: bytes, now: float) -> Output:
        """A presence part (`protocol.presence.is_presence_part`) on room `room_id`'s topic."""
        forward: list[bytes] = []
        notes: list[tuple[bytes, bytes]] = []
        kind = part[:1]
        try:
            if kind == REPORT_MARK:
                report = read_report(part)
                if report.room_id != room_id:
                    self.malformed += 1  # sent on another room's topic
                    return Output(forward, notes)
                for event in self.report(report, now):
                    if event.room_id == room_id:
                        forward.append(event_part(event.frame()))
                    else:
                        notes.append((room_topic(event.room_id), event_part(event.frame())))
            elif kind == WHO_MARK:
                query = read_who(part)
                if query.room_id != room_id:
                    self.malformed += 1
                    return Output(forward, notes)
                page = self.listing(room_id, query.cursor)
                frame = encode_presence(room_id, page.users, page.next, page.events)
                notes.append((query.origin, listing_part(Listing(query.request_id, room_id,
                                                                 frame))))
            else:
                self.malformed += 1
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
        return Output(forward, notes)

    def handle_heartbeat(self, part: bytes, now: float) -> list[list[bytes]]:
        """A heartbeat part (on `HEARTBEAT_TOPIC`): the messages to publish."""
        try:
            beat = read_heartbeat(part)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return []
        return messages(self.heartbeat(beat, now))

    # The rules.

    def _edge(self, edge_id: str, incarnation: str, now: float,
              out: list[Event]) -> EdgeState | None:
        """The edge's state, heard now; None for a message of a replaced incarnation."""
        edge = self._edges.get(edge_id)
        if edge is not None and edge.incarnation == incarnation:
            edge.heard = now
            return edge
        if (edge_id, incarnation) in self._retired:
            self.stale += 1
            return None
        if edge is not None:  # restarted: the old incarnation's connections are gone
            self._retired[(edge_id, edge.incarnation)] = None
            if len(self._retired) > RETIRED_KEPT:
                self._retired.popitem(last=False)
            self._drop_edge(edge, now, out)
        edge = self._edges[edge_id] = EdgeState(edge_id, incarnation, now)
        return edge

    def _drop_edge(self, edge: EdgeState, now: float, out: list[Event]) -> None:
        for room_id in list(edge.rooms):
            room = self._rooms.get(room_id)
            if room is not None:
                self._reconcile(edge, RoomMembers(room_id, 0, {}), now, False, out)
        edge.rooms.clear()

    def _room(self, room_id: str) -> RoomPresence:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = RoomPresence(room_id, self.limits.events_max(room_id))
        return room

    def _tidy(self, room: RoomPresence) -> None:
        if not room.users and not room.shares and not room.watchers:
            del self._rooms[room.room_id]

    def _watch(self, room: RoomPresence, edge: EdgeState, watchers: int) -> None:
        edge_id = edge.id
        watchers = max(watchers, 0)
        room.watching += watchers - room.watchers.get(edge_id, 0)
        if watchers:
            room.watchers[edge_id] = watchers
            edge.rooms.add(room.room_id)
        else:
            room.watchers.pop(edge_id, None)
            if edge_id not in room.shares:
                edge.rooms.discard(room.room_id)

    def _reconcile(self, edge: EdgeState, members: RoomMembers, now: float, quiet: bool,
                   out: list[Event]) -> None:
        """Make the edge's share of a room what it says it is; what it no longer
        lists dropped abruptly (a lost report, or the edge is gone)."""
        room = self._room(members.room_id)
        self._watch(room, edge, members.watchers)
        listed = members.users
        edge_id = edge.id
        shares = room.shares.get(edge_id)
        if shares:
            for user in [u for u in shares if u not in listed]:
                self._set(room, edge, user, 0, "", True, now, out)
            shares = room.shares.get(edge_id)
        for user, (count, name) in listed.items():
            old = None if shares is None else shares.get(user)
            if old is None or old[0] != count or old[1] != name:
                self._set(room, edge, user, max(count, 0), name, True, now, out, quiet)
            shares = room.shares.get(edge_id)
        self._tidy(room)

    def _set(self, room: RoomPresence, edge: EdgeState, user: str, count: int, name: str,
             abrupt: bool, now: float, out: list[Event], quiet: bool = False) -> None:
        """The user has `count` connections in the room on this edge, the newest named `name`."""
        edge_id = edge.id
        shares = room.shares.get(edge_id)
        old = None if shares is None else shares.get(user)
        before = 0 if old is None else old[0]
        member = room.users.get(user)
        if count > 0:
            if (old is None or old[1] != name) and not (valid_user(user) and valid_name(name)):
                self.malformed += 1  # edges check identities at the upgrade: a bug, not a user
                return
            if member is None:
                if self.members >= self.limits.max_members:
                    self.over_budget += 1
                    return
                member = room.users[user] = Member(name, edge_id, count)
                self.members += 1
                room.sorted = None
                if room.events_max and len(room.users) > room.events_max:
                    room.events = False
                if not quiet:
                    self._emit(room, Event(room.room_id, user, name), out)
            else:
                member.live += count - before
                if count > before:  # a new connection: the newest name, and no drop counted
                    member.name, member.name_edge, member.held = name, edge_id, 0
                elif member.name_edge == edge_id:
                    member.name = name
                if count < before and abrupt:
                    self._grace(room, user, member, before - count, now)
            if shares is None:
                shares = room.shares[edge_id] = {}
                edge.rooms.add(room.room_id)
            shares[user] = (count, name)
            return
        if shares is None or old is None:
            return
        del shares[user]
        if not shares:
            del room.shares[edge_id]
            if edge_id not in room.watchers:
                edge.rooms.discard(room.room_id)
        if member is None:  # pragma: no cover - a share always has its member
            return
        member.live -= before
        if abrupt:
            self._grace(room, user, member, before, now)
        if member.live > 0:
            if member.name_edge == edge_id:  # its newest connection is gone: another's name
                for other_id, other in room.shares.items():
                    share = other.get(user)
                    if share is not None:
                        member.name, member.name_edge = share[1], other_id
                        break
            return
        deadline = member.deadline
        if now < self.rebuild_until and (deadline is None or deadline < self.rebuild_until):
            # Its other connections may be on an edge not heard from since the start.
            deadline = member.deadline = self.rebuild_until
            heapq.heappush(self._graces, (deadline, room.room_id, user))
        if deadline is None or deadline <= now:
            self._remove(room, user, out)

    def _hold_unknown_leave(self, room: RoomPresence, edge: EdgeState, user: str,
                            name: str) -> None:
        if self.members >= self.limits.max_members:
            self.over_budget += 1
            return
        member = room.users[user] = Member(name, edge.id, 0)
        self.members += 1
        room.sorted = None
        member.held = 1  # listed until the rebuild ends, as a dropped connection is
        member.deadline = self.rebuild_until
        heapq.heappush(self._graces, (self.rebuild_until, room.room_id, user))

    def _grace(self, room: RoomPresence, user: str, member: Member, dropped: int,
               now: float) -> None:
        member.held += dropped
        deadline = now + self.limits.grace
        if member.deadline is None or deadline > member.deadline:
            member.deadline = deadline
            heapq.heappush(self._graces, (deadline, room.room_id, user))

    def _remove(self, room: RoomPresence, user: str, out: list[Event]) -> None:
        del room.users[user]
        self.members -= 1
        room.sorted = None
        self._emit(room, Event(room.room_id, user, None), out)

    def _emit(self, room: RoomPresence, event: Event, out: list[Event]) -> None:
        if room.events and room.watching > 0:
            out.append(event)


def messages(events: Iterable[Event]) -> list[list[bytes]]:
    """Events as broker messages: [room topic, event part, ...], one per run of a room's."""
    out: list[list[bytes]] = []
    last: str | None = None
    for event in events:
        if event.room_id != last:
            out.append([room_topic(event.room_id)])
            last = event.room_id
        out[-1].append(event_part(event.frame()))
    return out
