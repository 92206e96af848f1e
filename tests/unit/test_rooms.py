"""The registry's subscribe/unsubscribe decisions and the join handshake."""

from __future__ import annotations

from edge.rooms import JoinOutcome, LeaveOutcome, RoomRegistry
from protocol.topics import room_topic


def test_first_member_subscribes_and_waits_for_liveness() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    assert reg.join("a", "r") is JoinOutcome.SUBSCRIBE
    assert reg.join("b", "r") is JoinOutcome.WAIT
    assert [room.room_id for room in reg.pending()] == ["r"]
    assert reg.mark_live(room_topic("r")) == ["a", "b"]
    assert reg.mark_live(room_topic("r")) == []  # only once
    assert reg.join("c", "r") is JoinOutcome.JOINED
    assert list(reg.pending()) == []


def test_join_is_idempotent() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r")
    reg.mark_live(room_topic("r"))
    assert reg.join("a", "r") is JoinOutcome.JOINED
    assert list(reg.rooms_of("a")) == ["r"]
    room = reg.room(room_topic("r"))
    assert room is not None and room.members == {"a"}


def test_last_member_leaving_unsubscribes() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r")
    reg.join("b", "r")
    assert reg.leave("a", "r")[0] is LeaveOutcome.LEFT
    assert reg.leave("a", "r")[0] is LeaveOutcome.NOT_MEMBER
    outcome, room = reg.leave("b", "r")
    assert outcome is LeaveOutcome.UNSUBSCRIBE
    assert room is not None and room.topic == room_topic("r")
    assert len(reg) == 0
    assert reg.room(room_topic("r")) is None


def test_drop_returns_only_rooms_left_empty() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    for room in ("x", "y", "z"):
        reg.join("a", room)
    reg.join("b", "y")
    emptied = sorted(room.room_id for room in reg.drop("a"))
    assert emptied == ["x", "z"]
    assert reg.drop("a") == []
    assert [r.room_id for r in reg.rooms()] == ["y"]


def test_leaving_while_pending_is_not_acknowledged_later() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r")
    reg.join("b", "r")
    reg.leave("b", "r")
    assert reg.mark_live(room_topic("r")) == ["a"]


def test_room_cap() -> None:
    reg: RoomRegistry[str] = RoomRegistry(2)
    reg.join("a", "r1")
    reg.join("a", "r2")
    assert reg.join("a", "r3") is JoinOutcome.TOO_MANY_ROOMS
    assert reg.room_by_id("r3") is None
    assert reg.join("a", "r1") is JoinOutcome.WAIT  # already in: no cap applies
    reg.leave("a", "r1")
    assert reg.join("a", "r3") is JoinOutcome.SUBSCRIBE


def test_unverified_rooms_are_probed_again() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r")
    reg.mark_live(room_topic("r"))
    assert [r.room_id for r in reg.mark_all_unverified()] == ["r"]
    assert reg.join("b", "r") is JoinOutcome.WAIT
    assert reg.mark_live(room_topic("r")) == ["b"]


def test_repeated_joins_of_a_pending_room_wait_once() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r")
    for _ in range(5):
        assert reg.join("a", "r") is JoinOutcome.WAIT
    assert reg.mark_live(room_topic("r")) == ["a"]
    assert reg.pending_count() == 0
