"""The text of a benchmark chat message: who sent it, when, and in what order.

`room:sender:seq:ts:` then padding to the requested size. `ts` is
`time.monotonic_ns()` of the intended send time (one clock for every process
on the machine), so a receiver computes latency without clock sync and an
open-loop sender that falls behind cannot hide it (no coordinated omission).
"""

from __future__ import annotations

from typing import NamedTuple

PAD = "x"


class Stamp(NamedTuple):
    room: int  # index of the room the sender meant
    sender: int  # index of the sender, unique in a run
    seq: int  # 1, 2, 3... per sender
    ts_ns: int  # monotonic send time


def encode_stamp(stamp: Stamp, size: int) -> str:
    head = f"{stamp.room}:{stamp.sender}:{stamp.seq}:{stamp.ts_ns}:"
    return head + PAD * (size - len(head)) if len(head) < size else head


def parse_stamp(message: str) -> Stamp | None:
    """The stamp of a message, or None if the message is not one of ours."""
    parts = message.split(":", 4)
    if len(parts) != 5:
        return None
    try:
        return Stamp(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        return None
