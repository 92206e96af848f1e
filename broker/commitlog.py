"""The store's commit log: each loop turn's changes, appended before the turn is sent.

A turn's commit is the one step between sequencing a chat and forwarding
it, so it is kept to a copy into memory: the turn's journal (broker.journal)
is encoded as one record and copied into a segment file mapped into the
broker's memory. The mapped pages are the operating system's page cache,
so once the copy is done the record outlives the process (a crash or
`kill -9` loses nothing copied), as a commit to SQLite's write-ahead log
with `synchronous=NORMAL` did, at a few microseconds instead of a hundred.
A thread of the store (broker.store) later applies the records to the
SQLite file in batches, and deletes a segment once all of it is there; at
start the records not yet applied are applied first.

A segment's space is reserved when it is made (`posix_fallocate`), so a
copy into it never meets a full disk (a write into a mapped hole would end
the process with SIGBUS). Making a segment is the one step that can fail
for want of space, and it fails before anything of the turn is written.

A record is its payload's length and CRC-32, then the payload (msgpack).
Reading stops at the first record that is not whole and sound: a copy cut
short by a crash, or the zeros of reserved space not yet written.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec

from broker.journal import ChatRow, Journal, KeyRow

SEGMENT_BYTES = 4 * 1024 * 1024  # space reserved per segment (a bigger turn gets its own)
PREFIX = "streams.log."  # then the segment's number, 12 digits
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload


class Saved(NamedTuple):
    """A stream as a record has it: what the store writes of it."""

    topic: bytes
    epoch: str
    top: int


class Released(NamedTuple):
    seq: int
    owner: Saved | None  # the stream whose top the store keeps, if any


class Record(NamedTuple):
    created: list[Saved]
    dropped: list[Saved]
    chats: list[ChatRow]
    keys: list[KeyRow]
    released: list[Released]
    keys_through: int
    # The next seqs when the record was made: a broker that reads the
    # store back while records wait in the log never numbers rows with
    # seqs those records use (their deletes would take the new rows).
    next_chat: int
    next_key: int


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode


def encode(taken: Journal) -> bytes:
    """A record of what `taken` holds, framed (length, CRC-32, payload)."""
    payload = _encode((
        [Saved(s.topic, s.epoch, s.top) for s in taken.created],
        [Saved(s.topic, s.epoch, s.top) for s in taken.dropped],
        taken.chats,
        taken.keys,
        [(seq, None if s is None else Saved(s.topic, s.epoch, s.top))
         for seq, s in taken.released],
        taken.keys_through,
        taken.next_chat,
        taken.next_key,
    ))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_into(journal: Journal, payload: bytes) -> None:
    """Add a record's changes to `journal`, after what it holds.

    Raises msgspec.DecodeError or msgspec.ValidationError if a sound
    record does not hold a journal (another version wrote it).
    """
    record = _decode(payload)
    journal.created += record.created
    journal.dropped += record.dropped
    journal.chats += record.chats
    journal.keys += record.keys
    journal.released += record.released
    journal.keys_through = max(journal.keys_through, record.keys_through)
    journal.next_chat = max(journal.next_chat, record.next_chat)
    journal.next_key = max(journal.next_key, record.next_key)


def payloads(data: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(end, payload) of each sound record in `data` from `start`, up to the first that is not."""
    pos, size = start, len(data)
    while pos + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if length == 0 or end > size:
            return
        payload = bytes(data[pos + _HEADER.size:end])
        if zlib.crc32(payload) != crc:
            return
        yield end, payload
        pos = end


def sound_end(data: bytes) -> int:
    """Where the last sound record in `data` ends."""
    end = 0
    for end, _ in payloads(data):  # noqa: B007 (the last one is wanted)
        pass
    return end


class Segment:
    """A segment file; `end` is where its last whole record ends."""

    __slots__ = ("applied", "closed", "end", "number", "path")

    def __init__(self, path: Path, number: int, end: int, closed: bool) -> None:
        self.path = path
        self.number = number
        self.end = end
        self.closed = closed  # no more records will be written to it
        self.applied = 0  # the records before this offset are in the SQLite file

    def read(self, end: int) -> bytes:
        """The records from `applied` to `end`."""
        with open(self.path, "rb") as file:
            file.seek(self.applied)
            return file.read(end - self.applied)


class CommitLog:
    """The segments of one store's directory: the loop appends, the store's thread applies.

    The segment list is shared with that thread (under `_lock`); a record's
    bytes are whole in the file before `end` passes them.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        for number, path in found(directory):
            # What an earlier process wrote: complete, never written again.
            self._segments.append(Segment(path, number, sound_end(path.read_bytes()),
                                          closed=True))
        self._next = self._segments[-1].number + 1 if self._segments else 1
        self._map: mmap.mmap | None = None
        self._current: Segment | None = None
        self._size = 0  # the current segment's reserved bytes
        self._wanting = False  # the last append could not make a segment
        self.written = 0  # bytes appended by this process (records and headers)

    def append(self, record: bytes) -> bool:
        """Copy a framed record (`encode`) in; True if it started a new segment.
        Raises OSError, with nothing written, when no segment can be made for it."""
        current = self._current
        started = current is None or current.end + len(record) > self._size
        if started:
            self._wanting = True
            current = self._rotate(len(record))
            self._wanting = False
        assert current is not None and self._map is not None
        end = current.end + len(record)
        self._map[current.end:end] = record
        current.end = end
        self.written += len(record)
        return started

    def reserve(self) -> None:
        """After an `append` that found no space: make the segment it wanted. Raises OSError."""
        if self._wanting:
            self._rotate(0)
            self._wanting = False

    def pending(self) -> list[Segment]:
        """The segments not yet forgotten, oldest first."""
        with self._lock:
            return list(self._segments)

    def forget(self, segment: Segment) -> None:
        """A segment wholly applied to the SQLite file: deleted."""
        with self._lock:
            self._segments.remove(segment)
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        """No more appends: the current segment is closed (the store then applies it)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._current is not None:
            self._current.closed = True
            self._current = None

    def move_aside(self, suffix: str) -> list[str]:
        """Every segment renamed with `suffix` (the store it belongs to cannot be trusted)."""
        self.close()
        moved = []
        with self._lock:
            for segment in self._segments:
                if segment.path.exists():
                    target = segment.path.with_name(segment.path.name + suffix)
                    os.replace(segment.path, target)
                    moved.append(target.name)
            self._segments.clear()
        return moved

    def bytes_on_disk(self) -> int:
        total = 0
        for segment in self.pending():
            with contextlib.suppress(FileNotFoundError):
                total += segment.path.stat().st_size
        return total

    def _rotate(self, need: int) -> Segment:
        size = max(SEGMENT_BYTES, need)
        path = self.directory / f"{PREFIX}{self._next:012d}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            mapped = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)  # the mapping keeps the file
        self._next += 1
        self.close()
        segment = Segment(path, self._next - 1, 0, closed=False)
        with self._lock:
            self._segments.append(segment)
        self._map, self._current, self._size = mapped, segment, size
        return segment


def found(directory: Path) -> list[tuple[int, Path]]:
    """The segment files in `directory`, by number."""
    segments = []
    for path in directory.glob(PREFIX + "*"):
        number = path.name[len(PREFIX):]
        if len(number) == 12 and number.isdigit():
            segments.append((int(number), path))
    return sorted(segments)
