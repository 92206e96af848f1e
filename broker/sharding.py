"""What a broker that is shard I of N accepts, and the notes for what it refuses. Pure.

A room belongs to one shard (`protocol.shards.shard_of`); a broker that
sequenced a room of another shard would split its stream in two, so it
refuses it instead, loudly: each probe in the message gets a refusal note on
its edge's topic (a join's probe comes first, so a misconfigured edge learns
of it at its first join), and each chat with a msgId an ack marked refused.
A health probe that counts another N is answered with a refusal note instead
of coming back, so the edge's path to this shard stays down and says why.
"""

from __future__ import annotations

import msgspec

from protocol.shards import refusal_part, shard_of
from protocol.stream import MSGID_MARK, AckNote, ack_part, read_keyed
from protocol.topics import PROBE_MARK, edge_topic, parse_probe, room_of_topic

CACHE_MAX = 100_000  # topics whose shard is remembered
_OWN, _NOT_A_ROOM, _FOREIGN = 0, 1, 2


class ShardGuard:
    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count
        self._kind: dict[bytes, int] = {}  # topic -> _OWN, _OTHER_TOPIC or _FOREIGN
        self.refused_rooms = 0  # messages refused for a room of another shard
        self.refused_probes = 0  # health probes refused for another N

    def refused(self, message: list[bytes]) -> list[list[bytes]] | None:
        """None if this shard takes `message`; else the notes to send instead."""
        topic = message[0]
        kind = self._kind.get(topic)
        if kind is None:
            kind = self.kind_of(topic)
            if len(self._kind) >= CACHE_MAX:
                self._kind.clear()
            self._kind[topic] = kind
        if kind == _OWN:
            return None
        if kind == _NOT_A_ROOM:
            return self._check_count(message)
        self.refused_rooms += 1
        room_id = room_of_topic(topic) or ""
        text = (f"room {room_id!r} belongs to shard {shard_of(room_id, self.count)} of "
                f"{self.count}, not to this broker (shard {self.index}): check the order of "
                "--broker-shards")
        notes: list[list[bytes]] = []
        for part in message[1:]:
            mark = part[:1]
            if mark == PROBE_MARK:
                probe = parse_probe(part)
                if probe is not None:
                    notes.append([edge_topic(probe.edge_id), refusal_part(text)])
            elif mark == MSGID_MARK:
                try:
                    keyed = read_keyed(part)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                notes.append([keyed.origin, ack_part(
                    AckNote(room_id, keyed.key, "", 0, False, refused=True))])
        return notes

    def kind_of(self, topic: bytes) -> int:
        room_id = room_of_topic(topic)
        if room_id is None:
            return _NOT_A_ROOM
        if self.count == 1 or shard_of(room_id, self.count) == self.index:
            return _OWN
        return _FOREIGN

    def _check_count(self, message: list[bytes]) -> list[list[bytes]] | None:
        """A health probe on an edge's topic must count this broker's N."""
        notes = None
        for part in message[1:]:
            if part[:1] != PROBE_MARK:
                continue
            probe = parse_probe(part)
            if probe is None or probe.shards is None or probe.shards == self.count:
                continue
            self.refused_probes += 1
            notes = [[message[0], refusal_part(
                f"this broker is shard {self.index} of {self.count}, but the edge counts "
                f"{probe.shards} shards: every edge and broker must agree on N")]]
        return notes
