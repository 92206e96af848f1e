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

from broker.journal import Journal
from protocol.stream import (
    CHAT_SEPARATOR,
    MSGID_MARK,
    QUERY_MARK,
    AckNote,
    HistoryQuery,
    HistoryReply,
    ack_part,
    pack,
    read_keyed,
    read_query,
    reply_part,
    stamp_head,
    unpack,
)
from protocol.topics import PROBE_MARK, room_of_topic, room_topic, stamp_probe

CHAT_END = b"}}"  # a chat's JSON as an edge encodes it ends here: the stamp goes before
# What one remembered msgId costs besides its key: dict slot, tuple, order
# entry (measured 246-272 B with bench/streammem.py).
KEY_OVERHEAD = 300
# What one held chat costs besides its bytes: the bytes object's header, the
# deque slot, its share of the age marks (measured 40-160 B with
# bench/streammem.py; counted high so the budget is an upper bound).
ENTRY_OVERHEAD = 200
# What one chat row of a store costs in memory: its (last offset, seq) entry.
ROW_OVERHEAD = 100


def new_epoch() -> str:
    return secrets.token_urlsafe(9)  # 12 characters, 72 random bits


class Limits(NamedTuple):
    history_size: int  # chats kept per room
    history_ttl: float  # seconds a chat is kept
    history_bytes: int  # all rooms' history together, overheads included
    dedupe_window: float  # seconds a msgId is remembered


class Stream:
    """One room's stream: epoch, top, the chats still held, the msgIds remembered."""

    __slots__ = ("dedupe", "epoch", "epoch_bytes", "history", "marks", "next_mark", "room_id",
                 "rows", "stamp_head", "subscribed", "top", "topic")

    def __init__(self, room_id: str, epoch: str) -> None:
        self.room_id = room_id
        self.topic = room_topic(room_id)
        self.epoch = epoch
        self.epoch_bytes = epoch.encode()
        self.stamp_head = stamp_head(self.epoch_bytes)
        self.top = 0
        # The newest chats, stamped, oldest first: offsets top-len+1 .. top.
        self.history: deque[bytes] = deque()
        # Age marks, at most one per MARK_EVERY per room instead of a time
        # per chat: (when, top then). Chats up to a mark's top are at least
        # as old as the mark.
        self.marks: deque[tuple[float, int]] = deque()
        self.next_mark = float("-inf")
        self.dedupe: dict[str, tuple[int, float]] = {}  # key -> (offset, when)
        self.subscribed = False
        # With a store: the chat rows holding this room's history, oldest
        # first, as (offset of the row's last chat, row seq).
        self.rows: deque[tuple[int, int]] = deque()

    def first_held(self) -> int:
        """The lowest offset still in history (top + 1 when none is)."""
        return self.top - len(self.history) + 1


MARK_EVERY = 1.0  # seconds: the granularity of history's age


class Sequenced(NamedTuple):
    forward: list[bytes]  # the parts to publish on the room's topic, in order
    # (an edge's topic, part): acks of chats with a msgId, replies to queries.
    # Sent after `forward`: a reply's top counts the chats forwarded before it.
    notes: list[tuple[bytes, bytes]]


class Sequencer:
    """Every room's stream. With a `journal`, every change a store must make is
    recorded in it (see broker.journal), and `restore_*` rebuild the streams
    from a store."""

    def __init__(self, limits: Limits, make_epoch: Callable[[], str] = new_epoch,
                 journal: Journal | None = None) -> None:
        self.limits = limits
        self._make_epoch = make_epoch
        self.journal = journal
        # After a restart, rooms nobody has subscribed to yet are kept until
        # the edges have had time to subscribe again (see drop_idle).
        self.keep_idle = False
        self._saved_tops: dict[Stream, int] = {}  # while restoring: tops the store saved
        self._streams: dict[bytes, Stream] = {}
        # Every stream's age marks, in time order: the byte budget trims
        # from the oldest mark of any room.
        self._mark_order: deque[Stream] = deque()
        # Remembered msgIds in time order: (stream, key, when, msgId row seq).
        self._key_order: deque[tuple[Stream, str, float, int]] = deque()
        self.held_bytes = 0
        self.malformed = 0  # parts that were neither a chat, a keyed chat, a query nor a probe
        self.shortened_windows = 0  # msgIds forgotten early: the byte budget was all msgIds
        self.sequenced = 0  # chats given an offset since start
        self.duplicates = 0  # chats dropped as a msgId already sequenced

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
            if self.journal is not None:
                self.journal.created.append(stream)
        return stream

    # The hot path.

    def sequence(self, topic: bytes, parts: list[bytes], now: float) -> Sequenced | None:
        """One broker message on a room topic: what to forward, and the notes due.

        None if `topic` is not a room's.
        """
        stream = self._streams.get(topic) or self.stream(topic)
        if stream is None:
            return None
        forward: list[bytes] = []
        notes: list[tuple[bytes, bytes]] = []
        if now >= stream.next_mark:
            self._mark(stream, now)
        append = self._append
        journal = self.journal
        for part in parts:
            if part[:1] == b"{":
                first = stream.top + 1
                # One chat, or several packed: forwarded packed the same way.
                if CHAT_SEPARATOR not in part and part[-2:] == CHAT_END:
                    forward.append(append(stream, part))
                else:
                    chats = [chat for chat in unpack(part) if chat[-2:] == CHAT_END]
                    self.malformed += part.count(CHAT_SEPARATOR) + 1 - len(chats)
                    if not chats:
                        continue
                    forward.append(pack([append(stream, chat) for chat in chats]))
                if journal is not None:
                    self._log(journal, stream, first, forward[-1], now)
                continue
            kind = part[:1]
            if kind == MSGID_MARK:
                self._keyed(stream, part, now, forward, notes)
            elif kind == PROBE_MARK:
                forward.append(stamp_probe(part, stream.epoch_bytes, stream.top))
            elif kind == QUERY_MARK:
                self._query(stream, part, notes)
            else:
                self.malformed += 1
        if journal is not None and stream.rows:
            self._release(journal, stream)
        if self.held_bytes > self.limits.history_bytes:
            self._trim_to_budget()
        return Sequenced(forward, notes)

    def _log(self, journal: Journal, stream: Stream, first: int, body: bytes,
             now: float) -> None:
        """Record a forwarded part of chats `first`..top as the store's next chat row."""
        seq = journal.chat(stream.topic, first, stream.top, now, body)
        stream.rows.append((stream.top, seq))
        self.held_bytes += ROW_OVERHEAD

    def _release(self, journal: Journal, stream: Stream) -> None:
        """Release the stream's chat rows whose chats have all been trimmed."""
        rows = stream.rows
        first = stream.first_held()
        while rows and rows[0][0] < first:
            seq = rows.popleft()[1]
            # Its top must be saved only when no row holds it any more.
            journal.released.append((seq, None if rows else stream))
            self.held_bytes -= ROW_OVERHEAD

    def _append(self, stream: Stream, body: bytes) -> bytes:
        """Sequence one chat (its JSON ends with CHAT_END: checked by the caller)."""
        stream.top += 1
        self.sequenced += 1
        stamped = b"%s%s%d}}" % (body[:-2], stream.stamp_head, stream.top)
        history = stream.history
        history.append(stamped)
        self.held_bytes += len(stamped) + ENTRY_OVERHEAD
        if len(history) > self.limits.history_size:
            self.held_bytes -= len(history.popleft()) + ENTRY_OVERHEAD
        return stamped

    def _mark(self, stream: Stream, now: float) -> None:
        stream.marks.append((now, stream.top))
        stream.next_mark = now + MARK_EVERY
        self._mark_order.append(stream)

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
        if keyed.body[-2:] != CHAT_END or CHAT_SEPARATOR in keyed.body:
            self.malformed += 1
            return
        seen = stream.dedupe.get(keyed.key)
        if seen is not None and now - seen[1] <= self.limits.dedupe_window:
            self.duplicates += 1
            note = AckNote(stream.room_id, keyed.key, stream.epoch, seen[0], True)
        else:
            forward.append(self._append(stream, keyed.body))
            stream.dedupe[keyed.key] = (stream.top, now)
            seq = 0
            if self.journal is not None:
                self._log(self.journal, stream, stream.top, forward[-1], now)
                seq = self.journal.key(stream.topic, keyed.key, stream.top, now)
            self._key_order.append((stream, keyed.key, now, seq))
            self.held_bytes += len(keyed.key) + KEY_OVERHEAD
            note = AckNote(stream.room_id, keyed.key, stream.epoch, stream.top, False)
        notes.append((keyed.origin, ack_part(note)))

    # Trimming.

    def _trim_through(self, stream: Stream, offset: int) -> None:
        """Forget the room's chats up to `offset`."""
        history = stream.history
        drop = min(len(history), offset - stream.first_held() + 1)
        for _ in range(drop):
            self.held_bytes -= len(history.popleft()) + ENTRY_OVERHEAD
        if self.journal is not None:
            self._release(self.journal, stream)

    def _expire_oldest_window(self) -> Stream:
        """Forget the chats of the oldest age window of any room."""
        stream = self._mark_order.popleft()
        stream.marks.popleft()
        # A window runs from its mark to the next one: (its top, next top].
        self._trim_through(stream, stream.marks[0][1] if stream.marks else stream.top)
        if not stream.marks:
            stream.next_mark = float("-inf")
        return stream

    def _trim_to_budget(self) -> None:
        """Oldest history first; remembered msgIds only once no history is left."""
        order = self._mark_order
        while self.held_bytes > self.limits.history_bytes and order:
            stream = order[0]
            if len(stream.marks) > 1 or not stream.history:
                self._drop_if_idle(self._expire_oldest_window())
            else:  # the room's only window, still open: its oldest chats one by one
                self.held_bytes -= len(stream.history.popleft()) + ENTRY_OVERHEAD
                if self.journal is not None:
                    self._release(self.journal, stream)
        while self.held_bytes > self.limits.history_bytes and self._key_order:
            self.shortened_windows += 1
            self._drop_if_idle(self._forget_oldest_key())

    def expire(self, now: float) -> list[Stream]:
        """Drop history and msgIds past their age; return the streams dropped for good.

        A stream with no subscriber, no history and no remembered msgId is
        dropped: its room starts again with a new epoch.
        """
        cutoff = now - self.limits.history_ttl
        touched: set[Stream] = set()
        order = self._mark_order
        # A window whose end is older than the cutoff holds only expired chats.
        while order and order[0].marks[0][0] + MARK_EVERY <= cutoff:
            touched.add(self._expire_oldest_window())
        keys = self._key_order
        key_cutoff = now - self.limits.dedupe_window
        while keys and keys[0][2] < key_cutoff:
            touched.add(self._forget_oldest_key())
        return [s for s in touched if self._drop_if_idle(s)]

    def _forget_oldest_key(self) -> Stream:
        stream, key, at, seq = self._key_order.popleft()
        self.held_bytes -= len(key) + KEY_OVERHEAD
        if self.journal is not None:
            self.journal.keys_through = seq
        seen = stream.dedupe.get(key)
        if seen is not None and seen[1] == at:
            del stream.dedupe[key]
        return stream

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
        if stream.subscribed or stream.history or stream.dedupe or self.keep_idle:
            return False
        if self._streams.get(stream.topic) is stream:
            del self._streams[stream.topic]
            if self.journal is not None:
                self.journal.dropped.append(stream)
        return True

    def drop_idle(self) -> int:
        """Stop keeping idle rooms (see keep_idle); forget those idle now."""
        self.keep_idle = False
        return sum(self._drop_if_idle(s) for s in list(self._streams.values()))

    # Restoring from a store: streams first, then chat rows and msgId rows,
    # each in seq order (their time order), then `settle`.

    def restore_stream(self, topic: bytes, epoch: str, top: int) -> Stream | None:
        room_id = room_of_topic(topic)
        if room_id is None:
            return None
        stream = self._streams[topic] = Stream(room_id, epoch)
        stream.top = top
        self._saved_tops[stream] = top
        return stream

    def restore_chats(self, stream: Stream, seq: int, first: int, at: float,
                      chats: list[bytes]) -> None:
        """A chat row: chats `first`.. of `stream`, stamped, as `sequence` made them."""
        if stream.marks:  # not the room's first row: it must continue the last one
            if first != stream.top + 1:
                raise ValueError(f"chat row {seq} does not continue its room's stream")
        else:  # the rows before it, if any, were released
            stream.top = first - 1
        if at >= stream.next_mark:
            self._mark(stream, at)
        history = stream.history
        size = self.limits.history_size
        for chat in chats:
            history.append(chat)
            self.held_bytes += len(chat) + ENTRY_OVERHEAD
            if len(history) > size:
                self.held_bytes -= len(history.popleft()) + ENTRY_OVERHEAD
        stream.top = first + len(chats) - 1
        stream.rows.append((stream.top, seq))
        self.held_bytes += ROW_OVERHEAD
        if self.journal is not None:
            self._release(self.journal, stream)

    def restore_key(self, stream: Stream, seq: int, key: str, offset: int, at: float) -> None:
        stream.dedupe[key] = (offset, at)
        self._key_order.append((stream, key, at, seq))
        self.held_bytes += len(key) + KEY_OVERHEAD

    def settle(self, now: float) -> None:
        """After restoring: apply today's limits, keep idle rooms for a while."""
        for stream, top in self._saved_tops.items():
            stream.top = max(stream.top, top)
        self._saved_tops.clear()
        self.keep_idle = True
        self.expire(now)
        if self.held_bytes > self.limits.history_bytes:
            self._trim_to_budget()

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
        if upto < start:  # all of it trimmed already
            return HistoryReply(q.request_id, q.room_id, stream.epoch, top, False, [])
        chats = list(itertools.islice(stream.history, start - first, upto - first + 1))
        return HistoryReply(q.request_id, q.room_id, stream.epoch, top, complete, chats)
