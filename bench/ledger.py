"""Accounting of deliveries: what arrived, where, in what order, how late.

Pure bookkeeping, no sockets. Each receiving connection has a `Member` that
knows its room and the last sequence number it saw from each sender. A
message is a cross-room leak when it names another room than the member's,
or reaches a member after the server confirmed that it left the room;
an order violation when its sequence number is not above the last one seen
from the same sender. Skipped sequence numbers are remembered as gaps, so a
late arrival that fills one is told apart from a duplicate: the first still
acknowledges its message, the second never does. Loss is the deliveries
never acknowledged, so a duplicate cannot hide a missing copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.payload import Stamp, parse_stamp
from bench.stats import Histogram


@dataclass(slots=True)
class Member:
    room_id: str
    room: int
    last_seq: dict[int, int] = field(default_factory=dict)
    gaps: dict[int, set[int]] = field(default_factory=dict)  # sender -> seqs skipped so far
    left: bool = False  # the server has confirmed the leave


class Ledger:
    __slots__ = (
        "duplicates", "latency", "latency_from_ns", "leaks", "order_violations", "received"
    )

    def __init__(self) -> None:
        # Messages stamped before this (the warm-up) count for loss and order, not latency.
        self.latency_from_ns = 0
        self.received = 0
        self.leaks = 0
        self.order_violations = 0
        self.duplicates = 0
        self.latency = Histogram()

    def check(self, member: Member, room_id: str, message: str) -> Stamp | None:
        """The stamp of a message that belongs to the member's room; a leak otherwise."""
        stamp = parse_stamp(message)
        if (stamp is None or room_id != member.room_id or stamp.room != member.room
                or member.left):
            self.leaks += 1
            return None
        return stamp

    def accept(self, member: Member, stamp: Stamp, now_ns: int) -> bool:
        """Count a delivery and its latency; True if it is the first copy of its message."""
        self.received += 1
        if stamp.ts_ns >= self.latency_from_ns:
            self.latency.record((now_ns - stamp.ts_ns) / 1000.0)
        sender, seq = stamp.sender, stamp.seq
        last = member.last_seq.get(sender, 0)
        if seq == last + 1:
            member.last_seq[sender] = seq
            return True
        if seq > last:
            member.gaps.setdefault(sender, set()).update(range(last + 1, seq))
            member.last_seq[sender] = seq
            return True
        self.order_violations += 1
        gaps = member.gaps.get(sender)
        if gaps is not None and seq in gaps:
            gaps.discard(seq)
            return True
        self.duplicates += 1
        return False

    def deliver(self, member: Member, room_id: str, message: str, now_ns: int) -> Stamp | None:
        """The stamp of a first copy to acknowledge, else None."""
        stamp = self.check(member, room_id, message)
        if stamp is not None and self.accept(member, stamp, now_ns):
            return stamp
        return None
