"""What a generator process is asked to do: its share of a workload, as plain data.

The parent splits a workload by room, so every member of a room (and every
sender into it) lives in one generator process: acknowledging a message
("every member got it") then needs no talk between processes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

Transport = Literal["ws", "sio"]
Mode = Literal["fanout", "rate", "idle", "churn"]


@dataclass(frozen=True, slots=True)
class Share:
    mode: Mode
    transport: Transport
    urls: tuple[str, ...]
    prefix: str  # room ids are prefix + index: unique per run
    rooms: tuple[int, ...]  # indices of the rooms this process owns
    members: int  # per room, spread round-robin over `urls`
    senders: int  # per room, the first members of it
    size: int = 128  # characters per chat message
    duration: float = 10.0  # seconds of sending
    window: int = 20  # fanout: unacknowledged messages per sender
    rate: float = 20.0  # rate: messages per second per sender
    churners: int = 0  # churn: connections cycling at once in this process
    # churn: every connection is a user of its own (?user=&name=) and every join
    # asks for the room's presence events (protocol v2 section 7)
    presence: bool = False
    drain: float = 5.0  # seconds to wait for stragglers after the last send
    warmup: float = 0.0  # seconds at the start whose messages are left out of latency
    connect_concurrency: int = 200

    def room_id(self, room: int) -> str:
        return f"{self.prefix}{room}"

    def url_of(self, room: int, member: int) -> str:
        """Round-robin over the servers by the member's global index."""
        return self.urls[(room * self.members + member) % len(self.urls)]

    def sender_id(self, room: int, k: int) -> int:
        return room * self.senders + k

    def to_line(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_line(cls, line: str) -> Share:
        data = json.loads(line)
        data["urls"] = tuple(data["urls"])
        data["rooms"] = tuple(data["rooms"])
        return cls(**data)


def split_rooms(rooms: int, procs: int) -> list[tuple[int, ...]]:
    """Rooms dealt round-robin to at most `procs` processes; none gets an empty share."""
    procs = max(1, min(procs, rooms))
    return [tuple(range(i, rooms, procs)) for i in range(procs)]
