"""What the broker asks of its store, made by the broker's own sequencer. Pure.

`broker.streams.Sequencer` with a `broker.journal.Journal` sequences lone
128-character chats (the bytes an edge publishes, one chat per ZeroMQ
message, the store's worst case: a chat row each) round-robin over the
rooms, on a clock that advances as if 20,000 chats a second arrived. Each
turn's journal is taken as the broker's loop takes it, and the same changes
are also written out plainly (rows appended, rows released, each room's
epoch and top) so that store layouts other than the broker's can be given
exactly the same work.

A run starts with a fill: chats until the sequencer has released its first
row (history full: `history_size` per room, or the byte budget reached),
then one more round of the rooms. What follows is steady state: every
chat stored releases about one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple

from broker.journal import Journal
from broker.streams import Limits, Sequencer
from protocol.codec import encode_chat
from protocol.topics import room_topic

CLOCK_RATE = 20_000.0  # chats per second of the sequencer's clock
SIZE = 128  # message characters


class Turn(NamedTuple):
    """One loop turn's changes: for the broker's store, and written out for the others."""

    journal: Journal  # as broker.store.Store.commit takes it
    appended: list[tuple[bytes, int, float, bytes]]  # (topic, offset, at, stamped chat)
    released: list[tuple[bytes, int]]  # (topic, offset) no longer held
    tops: list[tuple[bytes, str, int]]  # (topic, epoch, top) of every room the turn touched


def default_limits(history_size: int = 1000, history_bytes: int = 256 * 1024 * 1024,
                   ) -> Limits:
    # No chat ages out during a run: only the count and the byte budget trim.
    return Limits(history_size, 1e9, history_bytes, 120.0)


class Generator:
    """Round-robin lone chats over `rooms` rooms through a real sequencer."""

    def __init__(self, rooms: int, limits: Limits, size: int = SIZE,
                 start: float | None = None) -> None:
        self.journal = Journal()
        self.sequencer = Sequencer(limits, journal=self.journal)
        self.topics = [room_topic(f"bench-{n}") for n in range(rooms)]
        text = "x" * size
        self.bodies = [encode_chat(f"bench-{n}", text, f"m{n}", "c-bench", 1_700_000_000_000)
                       for n in range(rooms)]
        for topic in self.topics:  # as if edges had subscribed: no room is dropped when empty
            self.sequencer.subscription(topic, True)
        self.now = time.time() if start is None else start
        self.next_room = 0
        self.sequenced = 0
        self.held = 0  # chats in rows not yet released
        # Chat rows not yet released: seq -> (topic, offset); every row holds one chat.
        self._rows: dict[int, tuple[bytes, int]] = {}

    def turn(self, chats: int) -> Turn:
        """Sequence `chats` chats and take what the store must write for them."""
        sequencer, topics, bodies = self.sequencer, self.topics, self.bodies
        rooms = len(topics)
        room = self.next_room
        tick = 1.0 / CLOCK_RATE
        now = self.now
        for _ in range(chats):
            sequencer.sequence(topics[room], [bodies[room]], now)
            room = room + 1 if room + 1 < rooms else 0
            now += tick
        self.next_room, self.now = room, now
        self.sequenced += chats
        taken = self.journal.take(1 << 62)
        rows = self._rows
        appended = []
        tops: dict[bytes, tuple[bytes, str, int]] = {}
        for row in taken.chats:
            rows[row.seq] = (row.topic, row.first)
            appended.append((row.topic, row.first, row.at, row.body))
        for row in taken.chats:  # every room's last row of the turn holds its top
            stream = sequencer.stream(row.topic)
            assert stream is not None
            tops[row.topic] = (row.topic, stream.epoch, row.last)
        released = [rows.pop(seq) for seq, _ in taken.released]
        self.held += len(appended) - len(released)
        return Turn(taken, appended, released, list(tops.values()))

    def fill(self, per_turn: int = 1024) -> Iterator[Turn]:
        """Turns until history is full and one more round of the rooms has been stored."""
        while True:
            turn = self.turn(per_turn)
            yield turn
            if turn.released:
                break
        for _ in range(0, len(self.topics), per_turn):
            yield self.turn(per_turn)

    def turns(self, chats: int, per_turn: int) -> list[Turn]:
        return [self.turn(min(per_turn, chats - done)) for done in range(0, chats, per_turn)]
