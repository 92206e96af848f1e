"""What the sequencer changed since the store last committed. Pure.

The sequencer (`broker.streams`) records here every change a durable store
must make, in the order it made them; the store (`broker.store`) appends
them to its commit log once per loop turn (`broker.commitlog`) and writes
them to its SQLite file in batches, one transaction each. The
store is laid out as two append-only logs and a table of streams:

- the chat log: one row per part the broker forwarded on a room's topic
  (one chat, or several packed), numbered by `seq` in the order they were
  sequenced. A room's history is the rows of its topic; a row is released
  (deleted) once every chat in it has been trimmed from history;
- the msgId log: one row per remembered msgId, numbered the same way.
  msgIds are forgotten oldest first, so one number says which rows to drop;
- the streams: each room's epoch, and its top once no chat row holds it.

Appending to a log touches only its last page, whatever the room: that is
what makes one transaction of a thousand chats over ten thousand rooms as
cheap as over one (see docs/benchmarks.md, "The store").
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Journaled(Protocol):
    """The part of a stream the journal needs (broker.streams.Stream, or a
    stream as the commit log recorded it)."""

    @property
    def topic(self) -> bytes: ...
    @property
    def epoch(self) -> str: ...
    @property
    def top(self) -> int: ...


class ChatRow(NamedTuple):
    seq: int
    topic: bytes
    first: int  # offsets of the first and the last chat in `body`
    last: int
    at: float  # wall-clock time it was sequenced
    body: bytes  # stamped, exactly as forwarded


class KeyRow(NamedTuple):
    seq: int
    topic: bytes
    key: str
    offset: int
    at: float


class Journal:
    """Changes not yet written, in the order made; `take` hands them over."""

    def __init__(self, next_chat: int = 1, next_key: int = 1) -> None:
        self.next_chat = next_chat  # the next chat row's seq
        self.next_key = next_key
        self.created: list[Journaled] = []  # streams made (a new epoch)
        self.dropped: list[Journaled] = []  # streams forgotten (their epoch ends)
        self.chats: list[ChatRow] = []
        self.keys: list[KeyRow] = []
        # Chat rows no longer needed, with their stream (to save its top with
        # the release): written a chunk per turn, so a long sweep never stalls.
        self.released: list[tuple[int, Journaled | None]] = []
        self.keys_through = 0  # msgId rows up to this seq are forgotten

    def __bool__(self) -> bool:
        return bool(self.created or self.dropped or self.chats or self.keys or self.released
                    or self.keys_through)

    def chat(self, topic: bytes, first: int, last: int, at: float, body: bytes) -> int:
        seq = self.next_chat
        self.next_chat = seq + 1
        self.chats.append(ChatRow(seq, topic, first, last, at, body))
        return seq

    def key(self, topic: bytes, key: str, offset: int, at: float) -> int:
        seq = self.next_key
        self.next_key = seq + 1
        self.keys.append(KeyRow(seq, topic, key, offset, at))
        return seq

    def take(self, release_chunk: int) -> Journal:
        """The changes to write now, leaving releases beyond `release_chunk` for later."""
        taken = Journal(self.next_chat, self.next_key)
        taken.created, self.created = self.created, []
        taken.dropped, self.dropped = self.dropped, []
        taken.chats, self.chats = self.chats, []
        taken.keys, self.keys = self.keys, []
        taken.released = self.released[:release_chunk]
        del self.released[:release_chunk]
        taken.keys_through, self.keys_through = self.keys_through, 0
        return taken
