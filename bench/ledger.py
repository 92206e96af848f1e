"""Accounting of deliveries: what arrived, where, in what order, how late.

Pure bookkeeping, no sockets. Each receiving connection has a `Member` that
knows its room and the last sequence number it saw from each sender. A
message is a cross-room leak when it names another room than the member's;
an order violation when its sequence number is not above the last one seen
from the same sender (so duplicates count too). Only in-order deliveries
acknowledge a message; loss is the deliveries never acknowledged, so a
duplicate can never hide a missing copy.
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


class Ledger:
    __slots__ = ("latency", "latency_from_ns", "leaks", "order_violations", "received")

    def __init__(self) -> None:
        # Messages stamped before this (the warm-up) count for loss and order, not latency.
        self.latency_from_ns = 0
        self.received = 0
        self.leaks = 0
        self.order_violations = 0
        self.latency = Histogram()

    def check(self, member: Member, room_id: str, message: str) -> Stamp | None:
        """The stamp of a message that belongs to the member's room; a leak otherwise."""
        stamp = parse_stamp(message)
        if stamp is None or room_id != member.room_id or stamp.room != member.room:
            self.leaks += 1
            return None
        return stamp

    def accept(self, member: Member, stamp: Stamp, now_ns: int) -> bool:
        """Count a delivery and its latency; True if it came in order."""
        self.received += 1
        if stamp.ts_ns >= self.latency_from_ns:
            self.latency.record((now_ns - stamp.ts_ns) / 1000.0)
        if stamp.seq <= member.last_seq.get(stamp.sender, 0):
            self.order_violations += 1
            return False
        member.last_seq[stamp.sender] = stamp.seq
        return True

    def deliver(self, member: Member, room_id: str, message: str, now_ns: int) -> Stamp | None:
        """The stamp of an in-order delivery to acknowledge, else None."""
        stamp = self.check(member, room_id, message)
        if stamp is not None and self.accept(member, stamp, now_ns):
            return stamp
        return None
