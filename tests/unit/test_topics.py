from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from protocol.ids import Sequence, base36
from protocol.topics import (
    Probe,
    edge_topic,
    is_probe,
    parse_probe,
    probe_body,
    room_of_topic,
    room_topic,
    stamp_probe,
)


def test_no_room_topic_is_a_prefix_of_another() -> None:
    rooms = ["r1", "r10", "r", "r ", "R1", "café", "cafe", "日本", "日本語", "a" * 128]
    topics = [room_topic(r) for r in rooms]
    for a, b in itertools.permutations(topics, 2):
        assert not b.startswith(a)
    assert all(not t.startswith(edge_topic("x")[:1]) for t in topics)


def test_room_topic_round_trips() -> None:
    for r in ("r1", "日本語", "with space "):
        assert room_of_topic(room_topic(r)) == r
    assert room_of_topic(edge_topic("abc")) is None


def test_probe_bodies() -> None:
    body = probe_body("edge1", 42)
    assert is_probe(body)
    assert parse_probe(body) == Probe("edge1", 42)
    stamped = stamp_probe(body, b"E1", 17)  # as a room's sequencer passes it on
    assert parse_probe(stamped) == Probe("edge1", 42, "E1", 17)
    assert parse_probe(b"?edge1 42 E1") is None
    # A health probe may say how many broker shards its sender counts.
    assert parse_probe(probe_body("edge1", 7, 2)) == Probe("edge1", 7, shards=2)
    assert parse_probe(b"?edge1 7 /x") is None
    assert not is_probe(b'{"type":"chat"}')
    assert parse_probe(b"?garbage") is None
    assert parse_probe(b"?\xff 1") is None


def test_sequences_are_unique_and_prefixed() -> None:
    seq = Sequence("abc", "-")
    ids = [seq.next() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids[0] == "abc-1"
    assert base36(0) == "0" and base36(35) == "z" and base36(36) == "10"


@given(st.integers(min_value=0, max_value=36**20))
def test_base36_is_int_in_base_36_without_leading_zeros(n: int) -> None:
    text = base36(n)
    assert int(text, 36) == n
    assert text == "0" or not text.startswith("0")
    assert text == text.lower()


def test_base36_at_the_table_edges() -> None:
    for k in range(1, 12):
        for n in (36**k - 1, 36**k, 36**k + 1, 1296**k - 1, 1296**k):
            assert int(base36(n), 36) == n and not base36(n).startswith("0")
