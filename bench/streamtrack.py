"""What one client saw of one room's stream, across its reconnects. Pure.

The recovery workload gives every member one `Track`. It is told of every
`joined` and every chat (epoch, offset), and of when a reconnect began; at
the end, given the room's last offset, it says which chats the member never
received (missed) and which it received more than once (duplicated), and how
long each reconnect took to bring back the first chat it had missed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Reconnect:
    began: float  # when the new connection was being opened
    since: tuple[str, int]  # the position passed as `since`
    joined_at: float | None = None
    recovered: bool | None = None
    replay_to: int | None = None  # the room's top at the rejoin: chats up to it are replayed
    first_at: float | None = None  # the first chat after `since` on the new connection
    abrupt: bool = False

    @property
    def missed_while_away(self) -> int:
        """Chats accepted while the client was away (replayed on the rejoin)."""
        if self.replay_to is None:
            return 0
        return max(0, self.replay_to - self.since[1])

    @property
    def recover_s(self) -> float | None:
        """Reconnect begun to first chat after `since` (the first recovered one)."""
        return None if self.first_at is None else self.first_at - self.began


@dataclass(slots=True)
class Track:
    epoch: str | None = None
    start: int = 0  # the top at the first join: the member is owed start+1 onwards
    last: int = 0  # highest offset seen in `epoch`
    seen: Counter[int] = field(default_factory=Counter)
    foreign: int = 0  # chats of an epoch other than the first join's
    reconnects: list[Reconnect] = field(default_factory=list)

    def joined(self, epoch: str | None, offset: int | None, recovered: bool | None,
               at: float) -> None:
        if self.epoch is None:
            self.epoch = epoch
            self.start = self.last = offset or 0
            return
        if self.reconnects and self.reconnects[-1].joined_at is None:
            rec = self.reconnects[-1]
            rec.joined_at = at
            rec.recovered = recovered
            rec.replay_to = offset

    def reconnecting(self, at: float, abrupt: bool) -> tuple[str, int]:
        """A new connection is being opened; returns the `since` to rejoin with."""
        since = (self.epoch or "", self.last)
        self.reconnects.append(Reconnect(at, since, abrupt=abrupt))
        return since

    def chat(self, epoch: str | None, offset: int | None, at: float) -> None:
        if epoch != self.epoch or offset is None:
            self.foreign += 1
            return
        self.seen[offset] += 1
        if offset > self.last:
            self.last = offset
        if self.reconnects:
            rec = self.reconnects[-1]
            if rec.first_at is None and rec.joined_at is not None and offset > rec.since[1]:
                rec.first_at = at

    def missed(self, final: int) -> int:
        """Chats start+1..final never received."""
        return sum(1 for o in range(self.start + 1, final + 1) if o not in self.seen)

    def duplicated(self) -> int:
        """Second and later copies of the same offset."""
        return sum(n - 1 for n in self.seen.values() if n > 1)

    def not_recovered(self) -> int:
        return sum(1 for r in self.reconnects if r.recovered is not True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[min(len(ordered), int(rank)) - 1]
