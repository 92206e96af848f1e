"""A broker shard refuses rooms of other shards and edges that count another N."""

from __future__ import annotations

from broker.sharding import ShardGuard
from protocol.shards import REFUSAL_MARK, read_refusal, shard_of
from protocol.stream import keyed_part, read_ack
from protocol.topics import edge_topic, probe_body, room_topic


def a_room_on(shard: int, n: int) -> str:
    return next(f"r{i}" for i in range(1000) if shard_of(f"r{i}", n) == shard)


def test_own_rooms_and_matching_probes_pass() -> None:
    guard = ShardGuard(1, 2)
    room = room_topic(a_room_on(1, 2))
    assert guard.refused([room, b'{"x":1}', probe_body("e1", 3)]) is None
    assert guard.refused([edge_topic("e1"), probe_body("e1", 4, 2)]) is None
    assert guard.refused([edge_topic("e1"), probe_body("e1", 5)]) is None  # says no N


def test_a_room_of_another_shard_is_refused_to_its_edges() -> None:
    guard = ShardGuard(1, 2)
    room_id = a_room_on(0, 2)
    keyed = keyed_part(edge_topic("e2"), "m1", b'{"x":1}')
    notes = guard.refused([room_topic(room_id), b'{"x":1}', probe_body("e1", 3), keyed])
    assert notes is not None and len(notes) == 2
    assert notes[0][0] == edge_topic("e1") and notes[0][1][:1] == REFUSAL_MARK
    assert "belongs to shard 0 of 2" in read_refusal(notes[0][1])
    assert notes[1][0] == edge_topic("e2")
    ack = read_ack(notes[1][1])
    assert (ack.room_id, ack.key, ack.refused) == (room_id, "m1", True)
    assert guard.refused_rooms == 1


def test_a_probe_counting_another_n_is_refused() -> None:
    guard = ShardGuard(0, 1)
    notes = guard.refused([edge_topic("e1"), probe_body("e1", 9, 2)])
    assert notes is not None and len(notes) == 1
    assert notes[0][0] == edge_topic("e1")
    assert "counts 2 shards" in read_refusal(notes[0][1])
