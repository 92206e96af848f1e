"""One direction of a delayed TCP path: each chunk held until a fixed time after it arrived.

Pure: the caller passes the clock. `bench/delayrelay.py` feeds it what a socket
reads and writes out what it releases; this module decides what is due, in
what order, and when reading must stop because too much is held.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


class Release(NamedTuple):
    """What is due now: bytes to write (in order) and whether the stream then ends."""

    data: bytes
    end: bool


class DelayLine:
    """Chunks in arrival order, each released `delay` seconds after it arrived.

    `limit` bounds the bytes held: past it, `full` says to stop reading the
    source until enough is released (the sender then feels TCP's backpressure,
    as it would behind a slow link, and nothing grows without end).
    """

    def __init__(self, delay: float, limit: int = 1 << 20) -> None:
        if delay < 0 or limit <= 0:
            raise ValueError(f"delay must be >= 0 and limit > 0, not {delay}, {limit}")
        self.delay = delay
        self.limit = limit
        self.held = 0
        self._chunks: deque[tuple[float, bytes]] = deque()
        self._end_at: float | None = None  # when the end of stream is released
        self.ended = False  # the end has been released

    def push(self, now: float, chunk: bytes) -> None:
        if self._end_at is not None:
            raise ValueError("data after the end of the stream")
        if chunk and not self.ended:  # after drop() there is nowhere to write it
            self._chunks.append((self._release_time(now), chunk))
            self.held += len(chunk)

    def finish(self, now: float) -> None:
        """The source sent its end (EOF): released after the data before it."""
        if self._end_at is None and not self.ended:
            self._end_at = self._release_time(now)

    def _release_time(self, now: float) -> float:
        # Never before the chunk ahead: the order on the wire is the order read,
        # even if a caller's clock steps back.
        last = self._chunks[-1][0] if self._chunks else now + self.delay
        return max(now + self.delay, last)

    @property
    def next_release(self) -> float | None:
        """When the next chunk (or the end) is due; None when nothing is held."""
        if self._chunks:
            return self._chunks[0][0]
        if self._end_at is not None and not self.ended:
            return self._end_at
        return None

    @property
    def full(self) -> bool:
        return self.held >= self.limit

    def due(self, now: float) -> Release:
        """Everything whose time has come, joined into one write."""
        out: list[bytes] = []
        while self._chunks and self._chunks[0][0] <= now:
            out.append(self._chunks.popleft()[1])
        data = b"".join(out)
        self.held -= len(data)
        end = (not self._chunks and not self.ended and self._end_at is not None
               and self._end_at <= now)
        if end:
            self.ended = True
        return Release(data, end)

    def drop(self) -> None:
        """The destination is gone: nothing held will ever be written."""
        self._chunks.clear()
        self.held = 0
        self._end_at = None
        self.ended = True
