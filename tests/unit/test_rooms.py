"""The registry's subscribe/unsubscribe decisions and the join handshake."""

from __future__ import annotations

from edge.rooms import JoinOutcome, JoinSpec, LeaveOutcome, RoomRegistry
from protocol.topics import room_topic

Ja, Jb, Jc = JoinSpec("a"), JoinSpec("b"), JoinSpec("c", history=5)


def live(reg: RoomRegistry[str], room_id: str) -> list[tuple[str, JoinSpec]]:
    """Probe the room and bring the probe back: the joins now due."""
    room = reg.room_by_id(room_id)
    assert room is not None
    token = reg.probe_due(room, now=0.0, retry=0.1)
    assert token is not None
    proven = reg.probe_returned(room.topic, token)
    if proven is None:
        return []
    room.epoch = "E"  # what edge.continuity learns from the probe's stamp
    return proven[1]


def test_first_member_subscribes_and_waits_for_liveness() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    assert reg.join("a", "r", Ja) is JoinOutcome.SUBSCRIBE
    assert reg.join("b", "r", Jb) is JoinOutcome.WAIT
    assert [room.room_id for room in reg.pending()] == ["r"]
    assert live(reg, "r") == [("a", Ja), ("b", Jb)]
    room = reg.room_by_id("r")
    assert room is not None and reg.probe_due(room, now=1.0, retry=0.1) is None  # live
    assert reg.join("c", "r", Jc) is JoinOutcome.JOINED
    assert list(reg.pending()) == []


def test_join_is_idempotent() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r", Ja)
    live(reg, "r")
    assert reg.join("a", "r", Ja) is JoinOutcome.ALREADY
    assert list(reg.rooms_of("a")) == ["r"]
    room = reg.room(room_topic("r"))
    assert room is not None and room.members == {"a"}


def test_last_member_leaving_unsubscribes() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r", Ja)
    reg.join("b", "r", Jb)
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
        reg.join("a", room, Ja)
    reg.join("b", "y", Jb)
    emptied = sorted(room.room_id for room in reg.drop("a"))
    assert emptied == ["x", "z"]
    assert reg.drop("a") == []
    assert [r.room_id for r in reg.rooms()] == ["y"]


def test_leaving_while_pending_is_not_acknowledged_later() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r", Ja)
    reg.join("b", "r", Jb)
    reg.leave("b", "r")
    assert live(reg, "r") == [("a", Ja)]


def test_room_cap() -> None:
    reg: RoomRegistry[str] = RoomRegistry(2)
    reg.join("a", "r1", Ja)
    reg.join("a", "r2", Ja)
    assert reg.join("a", "r3", Ja) is JoinOutcome.TOO_MANY_ROOMS
    assert reg.room_by_id("r3") is None
    assert reg.join("a", "r1", Ja) is JoinOutcome.WAIT  # already in: no cap applies
    reg.leave("a", "r1")
    assert reg.join("a", "r3", Ja) is JoinOutcome.SUBSCRIBE


def test_unverified_rooms_are_probed_again() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r", Ja)
    live(reg, "r")
    assert [r.room_id for r in reg.mark_all_unverified()] == ["r"]
    assert reg.join("b", "r", Jb) is JoinOutcome.WAIT
    assert live(reg, "r") == [("b", Jb)]


def test_a_probe_from_an_earlier_subscription_proves_nothing() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r", Ja)
    room = reg.room_by_id("r")
    assert room is not None
    first = reg.probe_due(room, now=0.0, retry=0.1)
    assert first is not None
    assert reg.probe_due(room, now=0.05, retry=0.1) is None  # not yet due again
    assert reg.probe_due(room, now=0.2, retry=0.1) == first  # same subscription, same token
    reg.leave("a", "r")  # last member gone; someone joins again
    reg.join("b", "r", Jb)
    again = reg.room_by_id("r")
    assert again is not None
    second = reg.probe_due(again, now=0.3, retry=0.1)
    assert second is not None and second != first
    assert reg.probe_returned(again.topic, first) is None  # the old probe, arriving late
    assert reg.probe_returned(again.topic, second) == (again, [("b", Jb)])


def test_probes_from_before_a_break_prove_nothing() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r", Ja)
    room = reg.room_by_id("r")
    assert room is not None
    before = reg.probe_due(room, now=0.0, retry=0.1)
    assert before is not None
    reg.mark_all_unverified()
    after = reg.probe_due(room, now=0.01, retry=0.1)  # due at once: the room must prove itself
    assert after is not None and after != before
    assert reg.probe_returned(room.topic, before) is None
    assert reg.probe_returned(room.topic, after) == (room, [("a", Ja)])


def test_repeated_joins_of_a_pending_room_wait_once() -> None:
    reg: RoomRegistry[str] = RoomRegistry(32)
    reg.join("a", "r", Ja)
    for _ in range(5):
        assert reg.join("a", "r", Ja) is JoinOutcome.WAIT
    assert live(reg, "r") == [("a", Ja)]
    assert reg.pending_count() == 0
