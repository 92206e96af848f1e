"""Rooms' streams, sequenced: the one writer of every room this broker owns. Pure.

For each chat of a room, in the order the broker receives them, in one
place: deduplicate its msgId, give it the room's next offset, append it to
the room's history, and return the stamped bytes to forward. That order is
why pub/sub order equals offset order (as in Centrifugo's memory broker).

A stream's epoch is made when its room's stream starts (random: a restart
without durable history, or a room whose state was dropped, never reuses an
old epoch with new offsets). History and the dedupe window are bounded by
count per room, age, and one byte budget for the whole broker; whatever was
trimmed can no longer be recovered, and a query says so (`complete` false).
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

import msgspec

from protocol.stream import (
    MSGID_MARK,
    QUERY_MARK,
    AckNote,
    HistoryQuery,
    HistoryReply,
    ack_part,
    read_keyed,
    read_query,
    reply_part,
    stamp,
)
from protocol.topics import PROBE_MARK, room_of_topic, room_topic, stamp_probe

CHAT_MARK = b"{"[0]
# What one held chat costs besides its bytes: the tuple, the deque slot, the
# global order entry (measured: docs/benchmarks.md).
ENTRY_OVERHEAD = 200


def new_epoch() -> str:
    return secrets.token_urlsafe(9)  # 12 characters, 72 random bits


class Limits(NamedTuple):
    history_size: int  # chats kept per room
    history_ttl: float  # seconds a chat is kept
    history_bytes: int  # all rooms' history together, overheads included
    dedupe_window: float  # seconds a msgId is remembered


class Held(NamedTuple):
    offset: int
    at: float
    body: bytes


class Stream:
    __slots__ = ("dedupe", "epoch", "epoch_bytes", "history", "room_id", "subscribed", "top",
                 "topic")

    def __init__(self, room_id: str, epoch: str) -> None:
        self.room_id = room_id
        self.topic = room_topic(room_id)
        self.epoch = epoch
        self.epoch_bytes = epoch.encode()
        self.top = 0
        self.history: deque[Held] = deque()
        self.dedupe: dict[str, tuple[int, float]] = {}  # key -> (offset, when)
        self.subscribed = False

    def first_held(self) -> int:
        """The lowest offset still in history (top + 1 when none is)."""
        return self.history[0].offset if self.history else self.top + 1


class Sequenced(NamedTuple):
    forward: list[bytes]  # the parts to publish on the room's topic, in order
    # (an edge's topic, part): acks of chats with a msgId, replies to queries.
    # Sent after `forward`: a reply's top counts the chats forwarded before it.
    notes: list[tuple[bytes, bytes]]


class Sequencer:
    def __init__(self, limits: Limits, make_epoch: Callable[[], str] = new_epoch) -> None:
        self.limits = limits
        self._make_epoch = make_epoch
        self._streams: dict[bytes, Stream] = {}
        # Every held chat and remembered msgId in arrival order (so also age
        # order): trimming by age or by the byte budget pops from the left.
        self._held_order: deque[tuple[Stream, int, float, int]] = deque()
        self._key_order: deque[tuple[Stream, str, float]] = deque()
        self.held_bytes = 0
        self.malformed = 0  # parts that were neither a chat, a keyed chat nor a probe

    def __len__(self) -> int:
        return len(self._streams)

    def streams(self) -> Iterator[Stream]:
        return iter(self._streams.values())

    def stream(self, topic: bytes) -> Stream | None:
        stream = self._streams.get(topic)
        if stream is None:
            room_id = room_of_topic(topic)
            if room_id is None:
                return None
            stream = self._streams[topic] = Stream(room_id, self._make_epoch())
        return stream

    # The hot path.

    def sequence(self, topic: bytes, parts: list[bytes], now: float) -> Sequenced | None:
        """One broker message on a room topic: what to forward, and the acks due.

        None if `topic` is not a room's.
        """
        stream = self.stream(topic)
        if stream is None:
            return None
        forward: list[bytes] = []
        notes: list[tuple[bytes, bytes]] = []
        for part in parts:
            kind = part[:1]
            if part and part[0] == CHAT_MARK:
                forward.append(self._append(stream, part, now))
            elif kind == MSGID_MARK:
                self._keyed(stream, part, now, forward, notes)
            elif kind == PROBE_MARK:
                forward.append(stamp_probe(part, stream.epoch_bytes, stream.top))
            elif kind == QUERY_MARK:
                self._query(stream, part, notes)
            else:
                self.malformed += 1
        return Sequenced(forward, notes)

    def _query(self, stream: Stream, part: bytes, notes: list[tuple[bytes, bytes]]) -> None:
        try:
            query = read_query(part)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return
        if query.room_id != stream.room_id:
            self.malformed += 1  # asked on another room's topic
            return
        notes.append((query.origin, reply_part(self.query(query))))

    def _keyed(
        self,
        stream: Stream,
        part: bytes,
        now: float,
        forward: list[bytes],
        notes: list[tuple[bytes, bytes]],
    ) -> None:
        try:
            keyed = read_keyed(part)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return
        seen = stream.dedupe.get(keyed.key)
        if seen is not None and now - seen[1] <= self.limits.dedupe_window:
            note = AckNote(stream.room_id, keyed.key, stream.epoch, seen[0], True)
        else:
            forward.append(self._append(stream, keyed.body, now))
            stream.dedupe[keyed.key] = (stream.top, now)
            self._key_order.append((stream, keyed.key, now))
            note = AckNote(stream.room_id, keyed.key, stream.epoch, stream.top, False)
        notes.append((keyed.origin, ack_part(note)))

    def _append(self, stream: Stream, body: bytes, now: float) -> bytes:
        if body[-2:] != b"}}":
            body = b"{}}"  # not a chat an edge made; keep the offset, never forward garbage
        stream.top += 1
        stamped = stamp(body, stream.epoch_bytes, stream.top)
        history = stream.history
        history.append(Held(stream.top, now, stamped))
        size = len(stamped) + ENTRY_OVERHEAD
        self.held_bytes += size
        self._held_order.append((stream, stream.top, now, size))
        if len(history) > self.limits.history_size:
            self._forget_oldest(stream)
        if self.held_bytes > self.limits.history_bytes:
            self._trim_to_budget()
        return stamped

    # Trimming.

    def _forget_oldest(self, stream: Stream) -> None:
        held = stream.history.popleft()
        self.held_bytes -= len(held.body) + ENTRY_OVERHEAD

    def _trim_to_budget(self) -> None:
        order = self._held_order
        while self.held_bytes > self.limits.history_bytes and order:
            self._pop_held_order()

    def _pop_held_order(self) -> None:
        stream, offset, _, _ = self._held_order.popleft()
        if stream.history and stream.history[0].offset == offset:
            self._forget_oldest(stream)
        # else: already trimmed by count (or the stream restarted)

    def expire(self, now: float) -> list[Stream]:
        """Drop history and msgIds past their age; return the streams dropped for good.

        A stream with no subscriber, no history and no remembered msgId is
        dropped: its room starts again with a new epoch.
        """
        cutoff = now - self.limits.history_ttl
        order = self._held_order
        touched: set[Stream] = set()
        while order and order[0][2] < cutoff:
            touched.add(order[0][0])
            self._pop_held_order()
        keys = self._key_order
        key_cutoff = now - self.limits.dedupe_window
        while keys and keys[0][2] < key_cutoff:
            stream, key, at = keys.popleft()
            seen = stream.dedupe.get(key)
            if seen is not None and seen[1] == at:
                del stream.dedupe[key]
            touched.add(stream)
        return [s for s in touched if self._drop_if_idle(s)]

    def subscription(self, topic: bytes, on: bool) -> Stream | None:
        """An edge subscribed to (or the last one unsubscribed from) a topic."""
        if on:
            stream = self.stream(topic)
            if stream is not None:
                stream.subscribed = True
            return stream
        stream = self._streams.get(topic)
        if stream is not None:
            stream.subscribed = False
            self._drop_if_idle(stream)
        return stream

    def _drop_if_idle(self, stream: Stream) -> bool:
        if stream.subscribed or stream.history or stream.dedupe:
            return False
        if self._streams.get(stream.topic) is stream:
            del self._streams[stream.topic]
        return True

    # Queries.

    def query(self, q: HistoryQuery) -> HistoryReply:
        """History for recovery, a join's replay, or an edge repairing a gap."""
        stream = self.stream(room_topic(q.room_id))
        assert stream is not None  # every room id has a topic
        top = stream.top
        upto = top if q.upto is None else min(q.upto, top)
        if q.epoch is not None and q.epoch != stream.epoch:
            return HistoryReply(q.request_id, q.room_id, stream.epoch, top, False, [])
        after = max(q.after, upto - max(q.limit, 0), 0)
        if after >= upto:
            return HistoryReply(q.request_id, q.room_id, stream.epoch, top, after == q.after, [])
        first = stream.first_held()
        complete = first <= after + 1 and after == q.after
        start = max(after + 1, first)
        chats = [
            held.body
            for held in itertools.islice(stream.history, start - first, upto - first + 1)
        ]
        return HistoryReply(q.request_id, q.room_id, stream.epoch, top, complete, chats)
