"""Which broker shard owns a room. Pure.

Rooms are spread over N brokers with Lamping and Veach's jump consistent
hash ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014): going from
N to N+1 shards moves about 1/(N+1) of the rooms, all of them to the new
shard. The key is the first 8 bytes of the room id's BLAKE2b-64 digest, read
big-endian, so that a publisher in any language finds the same shard
(Python's `hash()` is salted per process). Test vectors: docs/scaling.md.

A broker refuses what is not its own (a room of another shard, a health
probe from an edge that counts another number of shards) with a refusal
note on the sender's own topic: `X` and a UTF-8 text.
"""

from __future__ import annotations

from hashlib import blake2b

_MASK = (1 << 64) - 1
_MULTIPLIER = 2862933555777941757


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in [0, buckets) of a 64-bit unsigned key."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    key &= _MASK
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _MULTIPLIER + 1) & _MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def room_key(room_id: str) -> int:
    return int.from_bytes(blake2b(room_id.encode(), digest_size=8).digest(), "big")


def shard_of(room_id: str, shards: int) -> int:
    """The shard in [0, shards) that sequences `room_id`."""
    if shards == 1:
        return 0
    return jump_hash(room_key(room_id), shards)


REFUSAL_MARK = b"X"


def refusal_part(text: str) -> bytes:
    return REFUSAL_MARK + text.encode()


def read_refusal(part: bytes) -> str:
    return part[1:].decode(errors="replace")
