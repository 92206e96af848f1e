"""Room -> shard: the jump consistent hash and its key, against fixed vectors."""

from __future__ import annotations

import hashlib
import struct

import pytest

from protocol.shards import jump_hash, room_key, shard_of

# (room id, N, shard): the same table is in docs/scaling.md for other languages.
VECTORS = [
    ("lobby", 2, 0), ("lobby", 4, 3), ("lobby", 10, 3),
    ("room-1", 2, 1), ("room-1", 3, 1), ("room-1", 8, 3),
    ("room-2", 2, 0), ("room-2", 10, 0),
    ("général", 8, 4),
    ("🦊", 2, 1), ("🦊", 3, 2), ("🦊", 10, 9),
]


def reference(room_id: str, n: int) -> int:
    """The paper's loop written out plainly, with the key unpacked by struct."""
    key = struct.unpack(">Q", hashlib.blake2b(room_id.encode("utf-8"), digest_size=8).digest())[0]
    b, j = -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) % 2**64
        j = int(float(b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


@pytest.mark.parametrize(("room_id", "n", "shard"), VECTORS)
def test_vectors(room_id: str, n: int, shard: int) -> None:
    assert shard_of(room_id, n) == shard
    assert reference(room_id, n) == shard


def test_jump_hash_published_vectors() -> None:
    # The vectors other implementations (Go's dgryski/go-jump) test against.
    assert jump_hash(1, 1) == 0
    assert jump_hash(42, 57) == 43
    assert jump_hash(0xDEAD10CC, 1) == 0
    assert jump_hash(0xDEAD10CC, 666) == 361
    assert jump_hash(256, 1024) == 520


def test_matches_reference_widely() -> None:
    for i in range(2000):
        room = f"room-{i}"
        for n in (1, 2, 3, 4, 7, 16):
            assert shard_of(room, n) == reference(room, n)


def test_key_is_blake2b_64_big_endian() -> None:
    assert room_key("lobby") == int(hashlib.blake2b(b"lobby", digest_size=8).hexdigest(), 16)


def test_spread_and_minimal_movement() -> None:
    rooms = [f"r{i}" for i in range(4000)]
    counts = [0, 0, 0, 0]
    moved = 0
    for room in rooms:
        s3, s4 = shard_of(room, 3), shard_of(room, 4)
        counts[s4] += 1
        if s3 != s4:
            moved += 1
            assert s4 == 3  # a room that moves goes to the new shard only
    assert all(800 < c < 1200 for c in counts)
    assert 800 < moved < 1200  # about 1/4 of the rooms move


def test_refuses_no_buckets() -> None:
    with pytest.raises(ValueError):
        jump_hash(1, 0)
