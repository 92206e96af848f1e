"""The live progress line shown while a workload runs.

On a terminal it redraws one line in place; into a pipe or a log it prints a
line every few seconds instead, so CI output stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

TTY_EVERY = 0.25
PIPE_EVERY = 2.0


def render(label: str, elapsed: float, duration: float, sent: int, received: int,
           rate: float) -> str:
    return (
        f"[{label}] {elapsed:5.1f}/{duration:.0f} s  sent {sent:>9,}  "
        f"received {received:>10,}  ({rate:>9,.0f} deliveries/s)"
    )


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self._last_draw = 0.0
        self._last_received = 0
        self._last_at = 0.0
        self._rate = 0.0

    def note(self, text: str) -> None:
        if not self.quiet:
            self._clear()
            print(text, file=self.stream, flush=True)

    def start(self) -> None:
        self._last_draw = self._last_at = time.monotonic()
        self._last_received = 0
        self._rate = 0.0

    def update(self, label: str, elapsed: float, duration: float, sent: int,
               received: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last_draw < (TTY_EVERY if self.tty else PIPE_EVERY):
            return
        if now > self._last_at:
            self._rate = (received - self._last_received) / (now - self._last_at)
        self._last_received, self._last_at, self._last_draw = received, now, now
        line = render(label, elapsed, duration, sent, received, self._rate)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")

    def done(self) -> None:
        if not self.quiet:
            self._clear()
            self.stream.flush()
