"""Presence without sockets: the owner's rules, the edge's tally, identities, the wire.

Every report and heartbeat goes through its bytes, as it would cross the
broker, and every event is read back from the frame members would receive.
"""

from __future__ import annotations

import ast
import gc
import json
import tracemalloc
from pathlib import Path

import msgspec
import pytest

from broker.presence import (
    MEMBER_BYTES,
    MEMBER_BYTES_MAX,
    PAGE_USERS,
    PresenceLimits,
    PresenceOwner,
    messages,
)
from chatconfig import BrokerSettings, EdgeSettings, parse
from edge.presence import PresenceTally
from protocol.codec import (
    ProtocolError,
    decode_client_frame,
    decode_presence_frame,
    decode_server_frame,
    encode_chat,
    encode_join,
    encode_presence,
    encode_presence_join,
    encode_presence_leave,
    encode_presence_request,
)
from protocol.errors import ErrorCode
from protocol.identity import (
    Identity,
    IdentityRefusal,
    from_query,
    from_token,
    resolve,
    valid_name,
    valid_user,
)
from protocol.messages import (
    ChatMessage,
    ClientFrame,
    JoinRequest,
    Presence,
    PresenceFrame,
    PresenceJoin,
    PresenceLeave,
    PresenceRequest,
    ServerFrame,
)
from protocol.presence import (
    EDGE_TIMEOUT,
    EVENT_MARK,
    HEARTBEAT_EVERY,
    HEARTBEAT_TOPIC,
    Change,
    Heartbeat,
    Report,
    RoomMembers,
    WhoQuery,
    event_frame,
    heartbeat_part,
    heartbeat_parts,
    is_presence_part,
    read_heartbeat,
    read_listing,
    read_report,
    report_part,
    who_part,
)
from protocol.topics import edge_topic, room_topic

ROOT = Path(__file__).resolve().parents[2]
GRACE = 5.0
LIMITS = PresenceLimits(grace=GRACE)
EVERY = 2.0  # seconds between heartbeats in these tests, as the edges' default
START = 100.0  # the owner starts at 0: its rebuild window is long over


class World:
    """One owner and some edges, a clock, and what the watching members received."""

    def __init__(self, limits: PresenceLimits = LIMITS, edges: str = "ABC",
                 started: float = 0.0) -> None:
        self.owner = PresenceOwner(limits, started)
        self.edges = {name: PresenceTally(name, name + "-1") for name in edges}
        self.now = START if started == 0.0 else started
        self.events: list[tuple[str, str, str]] = []  # (kind, room, user)
        self.names: dict[str, str] = {}  # user -> the name its last join announced

    def _deliver(self, topic: bytes, parts: list[bytes]) -> None:
        for part in parts:
            assert part[:1] == EVENT_MARK
            frame = decode_presence_frame(event_frame(part))
            room = frame.payload.room_id
            assert topic == room_topic(room)
            match frame:
                case PresenceJoin(payload=body):
                    self.events.append(("join", room, body.user))
                    self.names[body.user] = body.name
                case PresenceLeave(payload=body):
                    self.events.append(("leave", room, body.user))
                case _:
                    raise AssertionError(frame)

    def _report(self, report: Report | None) -> None:
        if report is None:
            return
        out = self.owner.handle(report.room_id, report_part(report), self.now)
        self._deliver(room_topic(report.room_id), out.forward)
        for topic, part in out.notes:
            self._deliver(topic, [part])

    def join(self, edge: str, conn: str, user: str, room: str = "r", name: str | None = None,
             watch: bool = False) -> None:
        self._report(self.edges[edge].joined(conn, room, user, name or user.title(), watch))

    def leave(self, edge: str, conn: str, user: str, room: str = "r",
              abrupt: bool = False) -> None:
        self._report(self.edges[edge].left(conn, room, user, abrupt))

    def beat(self, *edges: str) -> None:
        for name in edges or tuple(self.edges):
            for part in self.edges[name].heartbeat():
                assert read_heartbeat(part).edge == name
                for message in self.owner.handle_heartbeat(part, self.now):
                    self._deliver(message[0], message[1:])

    def tick(self, seconds: float, beating: str | None = None, step: float = 1.0) -> None:
        """Let time pass in `step`s, expiring as the broker does every second;
        the edges in `beating` (default: all) heartbeat every EVERY seconds."""
        beating = "".join(self.edges) if beating is None else beating
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(self.now + step, end)
            if beating and round(self.now / EVERY, 6).is_integer():
                self.beat(*beating)
            for message in messages(self.owner.expire(self.now)):
                self._deliver(message[0], message[1:])

    def listing(self, room: str = "r") -> dict[str, int]:
        page = self.owner.listing(room)
        assert page.next is None
        return {user: count for user, _, count in page.users}

    def take(self) -> list[tuple[str, str]]:
        events = [(kind, user) for kind, _, user in self.events]
        self.events.clear()
        return events


# The contract's cases.


def test_two_users_three_connections_join_once_and_leave_once_each() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)  # listens, on another edge
    assert w.take() == [("join", "olga")]
    w.join("A", "a.1", "alice")
    w.join("B", "b.1", "alice")
    w.join("C", "c.2", "bob")
    assert w.listing() == {"alice": 2, "bob": 1, "olga": 1}
    assert w.take() == [("join", "alice"), ("join", "bob")]
    w.tick(10.0)  # heartbeats change nothing
    assert w.take() == []
    w.leave("A", "a.1", "alice")
    assert w.listing() == {"alice": 1, "bob": 1, "olga": 1}
    assert w.take() == []
    w.leave("B", "b.1", "alice")
    w.leave("C", "c.2", "bob")
    assert w.take() == [("leave", "alice"), ("leave", "bob")]
    assert w.listing() == {"olga": 1}
    w.tick(20.0)
    assert w.take() == []


def test_a_drop_and_a_rejoin_within_the_grace_is_neither_leave_nor_join() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "alice")
    w.take()
    w.leave("A", "a.1", "alice", abrupt=True)
    assert w.listing() == {"alice": 1, "olga": 1}  # still listed in its grace
    w.tick(GRACE - 1)
    w.join("B", "b.1", "alice")  # back, on another edge
    w.tick(3 * GRACE)
    assert w.take() == []
    assert w.listing() == {"alice": 1, "olga": 1}


def test_a_drop_without_a_rejoin_leaves_once_after_the_grace() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "alice")
    w.take()
    w.leave("A", "a.1", "alice", abrupt=True)
    w.tick(GRACE - 1)
    assert w.take() == []
    w.tick(1)
    assert w.take() == [("leave", "alice")]
    assert w.listing() == {"olga": 1}
    w.tick(3 * GRACE)
    assert w.take() == []


def test_a_clean_leave_is_at_once() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "alice")
    w.leave("A", "a.1", "alice")
    assert w.take() == [("join", "olga"), ("join", "alice"), ("leave", "alice")]


def test_a_blip_then_a_clean_leave_of_the_other_device_waits_for_the_grace() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "phone", "alice")
    w.join("B", "laptop", "alice")
    w.take()
    w.leave("A", "phone", "alice", abrupt=True)
    w.leave("B", "laptop", "alice")
    assert w.listing()["alice"] == 1
    w.tick(2.0)
    w.join("A", "phone2", "alice")  # the phone is back within its grace
    w.tick(3 * GRACE)
    assert w.take() == []


def test_connections_in_the_grace_count_only_until_the_user_has_another() -> None:
    w = World()
    w.join("A", "a.1", "alice")
    w.join("A", "a.2", "alice")
    w.leave("A", "a.1", "alice", abrupt=True)
    w.leave("A", "a.2", "alice", abrupt=True)
    assert w.listing() == {"alice": 2}
    w.join("B", "b.1", "alice")
    assert w.listing() == {"alice": 1}
    w.leave("B", "b.1", "alice", abrupt=True)
    assert w.listing() == {"alice": 1}


def test_an_edge_that_stops_heartbeating_loses_its_users_within_grace_plus_10_s() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    for i in range(50):
        w.join("A", f"a.{i}", f"user{i}", room=f"room{i % 5}")
        w.join("C", f"c.w{i % 5}", "olga", room=f"room{i % 5}", watch=True)
    w.join("A", "a.both", "bea")
    w.join("B", "b.both", "bea")
    w.tick(10.0)
    w.take()
    died = w.now  # A sent its last heartbeat at this moment, then died
    left: dict[str, float] = {}
    while w.now < died + GRACE + 10 and len(left) < 50:
        w.tick(1.0, beating="BC")
        for kind, _, user in w.events:
            assert kind == "leave" and user not in left
            left[user] = w.now
        w.events.clear()
    assert sorted(left) == sorted(f"user{i}" for i in range(50))
    assert all(died + GRACE < t <= died + GRACE + 8 for t in left.values())  # docs/presence.md
    for i in range(5):
        assert w.listing(f"room{i}") == {"olga": 1}
    assert w.listing() == {"olga": 1, "bea": 1}  # her other connection holds her
    w.tick(3 * GRACE, beating="BC")
    assert w.take() == []


def test_the_broker_s_presence_settings_are_its_owner_s_limits() -> None:
    args = ["--presence-grace", "1.5", "--presence-edge-timeout", "1.5",
            "--presence-rebuild", "3", "--presence-events-rules", "big-*=0"]
    rules = parse(BrokerSettings, args, {}).presence
    assert PresenceLimits.from_rules(rules) == PresenceLimits(
        grace=1.5, edge_timeout=1.5, rebuild=3.0, events_max_members=1000,
        events_rules=(("big-*", 0),))
    # By default an edge is dead after three missed heartbeats, and a broker
    # rebuilds for as long.
    limits = PresenceLimits.from_rules(parse(BrokerSettings, [], {}).presence)
    assert parse(EdgeSettings, [], {}).liveness.presence_heartbeat == HEARTBEAT_EVERY == EVERY
    assert limits.edge_timeout == limits.rebuild == EDGE_TIMEOUT == 3 * HEARTBEAT_EVERY
    assert limits == PresenceLimits(events_max_members=1000)


def test_a_restarted_edge_brings_no_ghosts_back() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "alice")
    w.join("A", "a.2", "bob")
    old = w.edges["A"]
    w.take()
    w.edges["A"] = PresenceTally("A", "A-2")  # killed and started again
    w.join("A", "a2.1", "alice")  # alice came back at once, bob did not
    assert w.listing() == {"alice": 1, "bob": 1, "olga": 1}  # bob: in his grace
    assert w.take() == []
    # Whatever of the old incarnation was still on its way is ignored.
    late = old.joined("a.3", "r", "carol", "Carol", False)
    assert late is not None
    w._report(late)
    for part in old.heartbeat():
        w.owner.handle_heartbeat(part, w.now)
    assert w.listing() == {"alice": 1, "bob": 1, "olga": 1}
    w.tick(GRACE + 1)
    assert w.take() == [("leave", "bob")]
    assert w.listing() == {"alice": 1, "olga": 1}
    assert w.owner.stale >= 2


def test_an_owner_restarted_rebuilds_from_heartbeats_without_events() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "alice", name="Alice A")
    w.join("B", "b.1", "alice", name="Alice B")
    w.join("B", "b.2", "bob")
    before = w.owner.listing("r")
    w.take()
    w.owner = PresenceOwner(LIMITS, w.now)  # restarted: nothing held
    w.tick(EVERY)  # every edge heartbeats once
    assert w.owner.listing("r") == before
    # A leave while not every edge may have been heard yet waits for the window...
    w.leave("B", "b.2", "bob")
    w.tick(1.0)
    assert w.take() == []
    w.tick(LIMITS.rebuild)
    assert w.take() == [("leave", "bob")]
    w.tick(20.0)
    assert w.take() == []
    # ... and after it, everything is as before.
    w.leave("A", "a.1", "alice")
    w.leave("B", "b.1", "alice")
    assert w.take() == [("leave", "alice")]


def test_a_leave_in_the_rebuild_window_waits_for_other_edges() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "alice")
    w.join("B", "b.1", "alice")
    w.take()
    w.owner = PresenceOwner(LIMITS, w.now)
    w.beat("A", "C")  # B has not heartbeated yet
    w.leave("A", "a.1", "alice")  # alice's only connection the owner knows of
    assert "alice" in w.listing()
    w.tick(EVERY)  # now B has
    w.tick(LIMITS.rebuild)
    assert w.take() == []
    assert w.listing() == {"alice": 1, "olga": 1}


def test_a_leave_before_its_edge_was_heard_after_a_restart_is_still_published() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "carl")
    w.join("B", "b.1", "dana")
    w.take()
    w.owner = PresenceOwner(LIMITS, w.now)
    w.beat("C")  # the watcher's edge is heard; A and B not yet
    w.leave("A", "a.1", "carl")  # carl was seen by olga before the restart
    w.leave("B", "b.1", "dana")
    w.join("B", "b.2", "dana")  # ... and dana is back at once: a quiet blip
    w.tick(LIMITS.rebuild + EVERY)
    assert w.take() == [("leave", "carl")]
    assert w.listing() == {"olga": 1, "dana": 1}


def test_a_lost_report_is_set_right_by_the_next_heartbeat() -> None:
    w = World()
    w.join("C", "c.1", "olga", watch=True)
    w.edges["A"].joined("a.1", "r", "alice", "Alice", False)  # its report lost
    w.tick(EVERY)
    assert w.take() == [("join", "olga"), ("join", "alice")]
    w.edges["A"].left("a.1", "r", "alice", False)  # lost too: counted as a drop
    w.tick(EVERY)
    assert w.listing() == {"alice": 1, "olga": 1}
    w.tick(GRACE)
    assert w.take() == [("leave", "alice")]


def test_a_heartbeat_with_a_part_lost_removes_nothing() -> None:
    w = World()
    for i in range(3):
        w.join("A", f"a.{i}", f"u{i}", room=f"r{i}")
    w.tick(EVERY)
    rooms = w.edges["A"].members()
    parts = heartbeat_parts("A", "A-1", 99, rooms, part_users=1)
    assert len(parts) == 3
    for part in (parts[0], parts[2]):  # the middle one lost
        assert w.owner.handle_heartbeat(part, w.now) == []
    w.tick(GRACE + 1, beating="")
    assert all(w.listing(f"r{i}") == {f"u{i}": 1} for i in range(3))
    whole = heartbeat_parts("A", "A-1", 100, rooms[:2], part_users=1)  # r2 left
    for part in whole:
        w.owner.handle_heartbeat(part, w.now)
    w.tick(GRACE + 1, beating="")
    assert w.owner.room("r2") is None
    assert w.listing("r1") == {"u1": 1}


def test_the_name_is_the_newest_connection_s() -> None:
    w = World()
    w.join("A", "a.1", "alice", name="Alice")
    w.join("B", "b.1", "alice", name="Alice (phone)")
    assert w.owner.listing("r").users == [("alice", "Alice (phone)", 2)]
    w.leave("B", "b.1", "alice")
    assert w.owner.listing("r").users == [("alice", "Alice", 1)]
    w.join("A", "a.2", "alice", name="Al")
    w.join("A", "a.3", "alice", name="Ally")
    w.leave("A", "a.3", "alice")
    assert w.owner.listing("r").users == [("alice", "Al", 2)]


def test_events_are_published_only_while_someone_listens() -> None:
    w = World()
    w.join("A", "a.1", "alice")
    w.join("B", "b.1", "bob")
    assert w.take() == []
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.2", "carol")
    w.leave("C", "c.1", "olga")
    w.leave("A", "a.2", "carol")
    assert w.take() == [("join", "olga"), ("join", "carol")]


def test_events_stop_above_the_member_limit_and_the_listing_goes_on() -> None:
    w = World(PresenceLimits(grace=GRACE, events_max_members=3,
                             events_rules=(("open-*", 0), ("small-*", 1))))
    w.join("C", "c.1", "olga", watch=True)
    w.join("A", "a.1", "alice")
    w.join("A", "a.2", "bob")
    w.join("A", "a.3", "carol")  # the fourth member
    w.leave("A", "a.3", "carol")
    w.leave("A", "a.2", "bob")  # three again: the room stays quiet
    w.join("A", "a.4", "dan")
    assert w.take() == [("join", "olga"), ("join", "alice"), ("join", "bob")]
    page = w.owner.listing("r")
    assert not page.events and len(page.users) == 3
    frame = decode_presence_frame(encode_presence("r", page.users, page.next, page.events))
    assert isinstance(frame, Presence) and frame.payload.events is False
    for conn, user in (("a.1", "alice"), ("a.4", "dan"), ("c.1", "olga")):
        w.leave(conn[0].upper(), conn, user)
    assert w.owner.room("r") is None  # empty: a new room's presence, events on
    w.join("C", "c.5", "olga", watch=True)
    assert w.take() == [("join", "olga")]
    assert w.owner.listing("r").events
    # Patterns first: no limit for open-*, 1 for small-*.
    for i in range(5):
        w.join("A", f"o.{i}", f"u{i}", room="open-x", watch=True)
        w.join("A", f"s.{i}", f"u{i}", room="small-x", watch=True)
    assert [e for e in w.events if e[1] == "open-x"] == [("join", "open-x", f"u{i}")
                                                           for i in range(5)]
    assert [e for e in w.events if e[1] == "small-x"] == [("join", "small-x", "u0")]


def test_a_listing_of_10000_members_is_one_frame_per_request() -> None:
    w = World()
    tally = w.edges["A"]
    for i in range(10_000):
        tally.joined(f"a.{i}", "big", f"user{i:05d}", f"User {i}", i == 0)
    w.tick(EVERY)  # one heartbeat: all of them
    assert w.owner.members == 10_000
    origin = edge_topic("edge-b")
    cursor: str | None = None
    seen: list[str] = []
    requests = 0
    while True:
        requests += 1
        part = who_part(WhoQuery(origin, requests, "big", cursor))
        assert is_presence_part(part)
        out = w.owner.handle("big", part, w.now)
        assert out.forward == []
        [(topic, reply)] = out.notes
        assert topic == origin
        listing = read_listing(reply)
        assert listing.request_id == requests
        assert len(listing.frame) < 100_000
        frame = decode_presence_frame(listing.frame)
        assert isinstance(frame, Presence)
        users = frame.payload.users
        assert 0 < len(users) <= PAGE_USERS
        assert all(u.connections == 1 and u.name == f"User {int(u.user[4:])}" for u in users)
        seen += [u.user for u in users]
        cursor = frame.payload.next
        if cursor is None:
            break
        assert cursor == users[-1].user
    assert requests == 10
    assert seen == sorted(f"user{i:05d}" for i in range(10_000))
    # A page starts after its cursor, whether that user is still here or not.
    w.edges["A"].left("a.4999", "big", "user04999", False)
    w.tick(EVERY)
    w.tick(GRACE)
    page = w.owner.listing("big", "user04999")
    assert page.users[0][0] == "user05000"


def test_a_page_stops_early_when_names_are_long() -> None:
    owner = PresenceOwner(PresenceLimits(rebuild=0.0), 0.0)
    name = "\U0001f600" * 64
    rooms = [RoomMembers("r", 0, {f"{i:064d}": (1, name) for i in range(2000)})]
    for part in heartbeat_parts("A", "A-1", 1, rooms):
        owner.handle_heartbeat(part, 1.0)
    page = owner.listing("r")
    assert 0 < len(page.users) < PAGE_USERS
    assert len(encode_presence("r", page.users, page.next)) < 4 * 64 * 1024 + 10_000


def test_a_malformed_part_is_counted_not_raised() -> None:
    owner = PresenceOwner(LIMITS, 0.0)
    assert owner.handle("r", b"P\x00\x01", 1.0).forward == []
    assert owner.handle("r", b"W", 1.0).notes == []
    assert owner.handle_heartbeat(b"M\xff", 1.0) == []
    report = Report("A", "A-1", Change.JOINED, "other", "u", "a.1", 1, "U", 1)
    owner.handle("r", report_part(report), 1.0)  # on another room's topic
    bad = Report("A", "A-1", Change.JOINED, "r", "u\x00", "a.1", 1, "U", 1)
    owner.handle("r", report_part(bad), 1.0)  # an identity that breaks the rules
    assert owner.malformed == 5
    assert owner.members == 0


def test_the_member_budget_is_kept() -> None:
    owner = PresenceOwner(PresenceLimits(rebuild=0.0, max_members=3), 0.0)
    rooms = [RoomMembers("r", 0, {f"u{i}": (1, "n") for i in range(5)})]
    for part in heartbeat_parts("A", "A-1", 1, rooms):
        owner.handle_heartbeat(part, 1.0)
    assert owner.members == 3 and owner.over_budget == 2
    assert owner.held_bytes() == 3 * MEMBER_BYTES


def _cost_per_member(user: str, name: str, n: int = 3000) -> float:
    owner = PresenceOwner(PresenceLimits(rebuild=0.0), 0.0)
    tally = PresenceTally("A", "A-1")
    parts = [report_part(r) for i in range(n)
             if (r := tally.joined(f"a.{i}", "r", f"{i:06d}{user}"[:64], name, False))]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for part in parts:  # the strings are made here, as the broker decodes them
            owner.handle("r", part, 1.0)
        owner.listing("r")
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert owner.members == n
    return (after - before) / n


def test_what_a_member_costs_is_bounded() -> None:
    typical = _cost_per_member("u" * 10, "n" * 16)
    assert typical <= MEMBER_BYTES
    widest = _cost_per_member("\U0001f600" * 64, "\U0001f600" * 64)
    assert MEMBER_BYTES < widest <= MEMBER_BYTES_MAX


# The edge's tally.


def test_the_tally_counts_a_connection_once_and_names_the_newest() -> None:
    tally = PresenceTally("A", "A-1")
    first = tally.joined("a.1", "r", "alice", "Alice", True)
    assert first is not None and (first.count, first.name, first.watchers) == (1, "Alice", 1)
    assert tally.joined("a.1", "r", "alice", "Alice", True) is None  # joined again
    second = tally.joined("a.2", "r", "alice", "Al", False)
    assert second is not None and (second.count, second.name, second.watchers) == (2, "Al", 1)
    [room] = tally.members()
    assert room == RoomMembers("r", 1, {"alice": (2, "Al")})
    gone = tally.left("a.2", "r", "alice", abrupt=True)
    assert gone is not None and gone.change is Change.DROPPED
    assert (gone.count, gone.name, gone.watchers) == (1, "Alice", 1)
    assert tally.left("a.2", "r", "alice", abrupt=False) is None  # not a member any more
    last = tally.left("a.1", "r", "alice", abrupt=False)
    assert last is not None and last.change is Change.LEFT and (last.count, last.watchers) == (
        0, 0)
    assert tally.members() == []
    [part] = tally.heartbeat()  # no member: one part all the same (it keeps the edge alive)
    assert read_heartbeat(part) == Heartbeat("A", "A-1", 1, 0, 1, [])


def test_the_tally_heartbeats_each_owner_its_own_rooms() -> None:
    tally = PresenceTally("A", "A-1")
    tally.joined("a.1", "x1", "alice", "Alice", False)
    tally.joined("a.1", "y1", "alice", "Alice", False)
    [part] = tally.heartbeat(lambda room: room.startswith("x"))
    assert [r.room_id for r in read_heartbeat(part).rooms] == ["x1"]


# Identity.


@pytest.mark.parametrize("value", ["a", "x" * 64, "Zoë", "\U0001f600" * 64, "a b", "\xa0",
                                   "mwwnqoc944b258.3"])
def test_identities_that_fit_the_rules(value: str) -> None:
    assert valid_user(value) and valid_name(value)


@pytest.mark.parametrize("value", ["", "x" * 65, "a\x00", "\x1f", "tab\t", "\x7f", "\x9f",
                                   "\n", "\U0001f600" * 65, None, 5])
def test_identities_that_break_the_rules(value: object) -> None:
    assert not valid_user(value) and not valid_name(value)


def test_an_identity_from_the_upgrade_url() -> None:
    assert from_query("", "e.1") == Identity("e.1", "e.1")
    assert from_query("user=alice", "e.1") == Identity("alice", "alice")
    assert from_query("name=Al%C3%AFce", "e.1") == Identity("e.1", "Alïce")
    assert from_query("user=alice&name=Alice+Liddell&x=1", "e.1") == Identity(
        "alice", "Alice Liddell")
    for query in ("user=", "user=a&user=b", "name=" + "x" * 65, "user=a%00",
                  "name=%0A", "user=%FF"):
        refused = from_query(query, "e.1")
        assert isinstance(refused, IdentityRefusal), query
        assert refused.text and "\\" not in refused.text


def test_an_identity_from_a_token() -> None:
    assert from_token("alice", None) == Identity("alice", "alice")
    assert from_token("alice", "Alice") == Identity("alice", "Alice")
    assert isinstance(from_token("alice", 7), IdentityRefusal)
    assert isinstance(from_token("alice", ""), IdentityRefusal)
    assert isinstance(from_token("a" * 65, None), IdentityRefusal)
    assert resolve("e.1", None, None) == Identity("e.1", "e.1")


# The wire.


def test_presence_frames_are_as_section_7_writes_them() -> None:
    assert json.loads(encode_presence("r", [("u", "n", 2)])) == {
        "type": "presence",
        "payload": {"roomId": "r", "users": [{"user": "u", "name": "n", "connections": 2}]},
    }
    assert json.loads(encode_presence("r", [], "u9")) == {
        "type": "presence", "payload": {"roomId": "r", "users": [], "next": "u9"},
    }
    assert json.loads(encode_presence_join("r", "u", "n")) == {
        "type": "presence_join", "payload": {"roomId": "r", "user": "u", "name": "n"},
    }
    assert json.loads(encode_presence_leave("r", "u")) == {
        "type": "presence_leave", "payload": {"roomId": "r", "user": "u"},
    }
    assert json.loads(encode_join("r", presence=True)) == {
        "type": "join", "payload": {"roomId": "r", "presence": True},
    }
    assert json.loads(encode_presence_request("r", "c")) == {
        "type": "presence", "payload": {"roomId": "r", "cursor": "c"},
    }


def test_a_presence_request_decodes_and_its_mistakes_are_named() -> None:
    request = decode_client_frame(encode_presence_request("r"))
    assert isinstance(request, PresenceRequest) and request.payload.cursor is None
    for bad in ('{"type":"presence","payload":{}}',
                '{"type":"presence","payload":{"roomId":"r","cursor":""}}',
                '{"type":"presence","payload":{"roomId":"r","cursor":5}}',
                '{"type":"presence","payload":{"roomId":"r\\u0000"}}',
                '{"type":"presence"}'):
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(bad)
        assert info.value.code is ErrorCode.INVALID_PAYLOAD, bad
    with pytest.raises(ProtocolError) as info:
        decode_client_frame('{"type":"dance"}')
    assert info.value.code is ErrorCode.UNKNOWN_TYPE


def test_the_presence_frames_join_the_unions_without_a_clash() -> None:
    clients = msgspec.json.Decoder(ClientFrame)
    assert isinstance(clients.decode(encode_presence_request("r")), PresenceRequest)
    assert isinstance(clients.decode(encode_join("r", presence=True)), JoinRequest)
    servers = msgspec.json.Decoder(ServerFrame | PresenceFrame)
    assert isinstance(servers.decode(encode_presence_leave("r", "u")), PresenceLeave)


def test_a_chat_may_carry_the_sender_s_name() -> None:
    plain = encode_chat("r", "hi", "id-1", "c.1", 1)
    assert plain.endswith(b'"name":"c.1"}}')  # every chat has one: by default the user
    named = decode_server_frame(encode_chat("r", "hi", "id-1", "alice", 1, "m1", "Alice"))
    assert isinstance(named, ChatMessage)
    assert (named.payload.sender, named.payload.name) == ("alice", "Alice")
    assert encode_chat("r", "hi", "id-1", "alice", 1, name="Alice").endswith(b'"Alice"}}')


def test_the_broker_envelope_round_trips() -> None:
    report = Report("A", "A-1", Change.DROPPED, "r", "u", "a.1", 0, "U", 0)
    part = report_part(report)
    assert part[:1] == b"P" and is_presence_part(part) and read_report(part) == report
    beat = Heartbeat("A", "A-1", 3, 0, 1, [RoomMembers("r", 1, {"u": (2, "U")})])
    assert read_heartbeat(heartbeat_part(beat)) == beat
    assert not is_presence_part(b'{"type":"chat"}') and not is_presence_part(b"H")
    # Every mark differs from those protocol.stream and protocol.topics use.
    assert {b"P", b"W", b"E", b"L", b"M"}.isdisjoint({b"{", b"!", b"?", b"H", b"A", b"R"})
    assert HEARTBEAT_TOPIC[:1] not in (room_topic("r")[:1], edge_topic("e")[:1])
    rooms = [RoomMembers(f"r{i}", 0, {f"u{j}": (1, "n") for j in range(i)}) for i in range(6)]
    parts = [read_heartbeat(p) for p in heartbeat_parts("A", "A-1", 7, rooms, part_users=5)]
    assert [len(p.rooms) for p in parts] == [3, 1, 1, 1]  # whole rooms, one alone above it
    assert [(p.part, p.parts, p.round) for p in parts] == [(i, 4, 7) for i in range(4)]


def test_the_presence_cores_do_no_io() -> None:
    for name in ("broker/presence.py", "edge/presence.py", "protocol/presence.py",
                 "protocol/identity.py"):
        tree = ast.parse((ROOT / name).read_text())
        used: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                used.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                used.add(node.module.split(".")[0])
        assert not used & {"asyncio", "socket", "zmq", "aiohttp", "selectors", "time"}, name
