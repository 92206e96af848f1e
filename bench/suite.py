"""The workloads, as the parent runs them against one started server design.

Each builds the generator shares (rooms split across generator processes),
runs them, and returns the summarized result. Sizes default to the spec's
presets and can be changed from the command line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.knee import Point, describe, find_knee
from bench.pinning import CpuPlan
from bench.plan import Mode, Share, split_rooms
from bench.plot import NOISY
from bench.progress import Progress
from bench.runner import run_shares
from bench.servers import ServerSet
from bench.summary import summarize
from broker.presence import PresenceLimits

CONNECTIONS_PER_PROCESS = 5000  # keeps each generator well below its open-files limit
# The first second holds the closed loop's opening burst and cold caches; its
# latencies are left out (its messages still count for loss and order).
WARMUP = 1.0
# A broker that has just started publishes no presence_leave for its first
# `rebuild` seconds (its edges' heartbeats rebuild its presence quietly), so a
# churning user would seem never to leave: presence runs start after them.
PRESENCE_SETTLE = PresenceLimits().rebuild + 0.5


@dataclass(frozen=True, slots=True)
class Params:
    rooms: int = 20
    members: int = 10
    senders: int = 2  # per room
    window: int = 20
    size: int = 128
    duration: float = 10.0
    rate: float = 800.0  # latency: messages per second offered in total
    # Up to about where one generator core still keeps up (~100,000 deliveries/s).
    rates: tuple[float, ...] = (400.0, 1600.0, 3200.0, 4800.0, 6400.0, 8000.0, 9600.0)
    step: float = 3.0  # seconds per sweep point
    connections: int = 10_000
    churners: int = 2  # per room
    presence: bool = False  # churn: joins carry `presence: true`, each client its own user
    procs: int | None = None  # generator processes (default: one per generator core)


class Bench:
    def __init__(self, params: Params, cpus: CpuPlan, logs: Path, progress: Progress) -> None:
        self.params = params
        self.cpus = cpus
        self.logs = logs
        self.progress = progress
        self._runs = 0

    def _procs(self, wanted: int | None = None) -> int:
        return self.params.procs or wanted or len(self.cpus.loadgen)

    def _shares(self, servers: ServerSet, mode: Mode, rooms: int, procs: int,
                **fields: Any) -> list[Share]:
        self._runs += 1
        if "duration" in fields:
            fields["warmup"] = round(min(WARMUP, fields["duration"] / 4), 3)
        prefix = f"b{self._runs}-{mode}-"
        return [
            Share(mode=mode, transport=servers.transport, urls=tuple(servers.urls),
                  prefix=prefix, rooms=part, **fields)
            for part in split_rooms(rooms, procs)
        ]

    async def _run(self, workload: str, servers: ServerSet, shares: list[Share],
                   params: dict[str, Any]) -> dict[str, Any]:
        raw = await run_shares(servers, shares, self.cpus, self.logs, workload, self.progress)
        return summarize(workload, servers, params, raw, self.cpus)

    async def fanout(self, servers: ServerSet) -> dict[str, Any]:
        p = self.params
        fields = dict(members=p.members, senders=p.senders, window=p.window, size=p.size,
                      duration=p.duration)
        shares = self._shares(servers, "fanout", p.rooms, self._procs(), **fields)
        return await self._run("fanout", servers, shares, {"rooms": p.rooms, **fields})

    async def _rate(self, workload: str, servers: ServerSet, total: float,
                    duration: float) -> dict[str, Any]:
        p = self.params
        per_sender = total / (p.rooms * p.senders)
        fields = dict(members=p.members, senders=p.senders, size=p.size, duration=duration,
                      rate=per_sender)
        shares = self._shares(servers, "rate", p.rooms, self._procs(), **fields)
        return await self._run(workload, servers, shares,
                               {"rooms": p.rooms, "offered_per_s": total, **fields})

    async def latency(self, servers: ServerSet) -> dict[str, Any]:
        return await self._rate("latency", servers, self.params.rate, self.params.duration)

    async def sweep(self, servers: ServerSet) -> dict[str, Any]:
        points = []
        for total in sorted(self.params.rates):
            points.append(await self._rate("sweep", servers, total, self.params.step))
        knee = find_knee([
            Point(r["params"]["offered_per_s"], r["latency_ms"]["p99"],
                  r["received"] / r["expected"] if r["expected"] else 0.0)
            for r in points
        ])
        text = describe(knee)
        noisy = [r for r in points if r["params"]["offered_per_s"] == knee.bent_at
                 and r["other_cpu_pct"] > NOISY]
        if noisy:
            text += (f"; other work used {noisy[0]['other_cpu_pct']:.0f} % of the machine at "
                     "that point, so the bend may be noise")
        return {"server": servers.name, "points": points, "knee": dataclasses.asdict(knee),
                "knee_text": text}

    async def scale(self, servers: ServerSet) -> dict[str, Any]:
        p = self.params
        rooms = math.ceil(p.connections / p.members)
        procs = self._procs(max(len(self.cpus.loadgen),
                                math.ceil(p.connections / CONNECTIONS_PER_PROCESS)))
        fields = dict(members=p.members, senders=0)
        shares = self._shares(servers, "idle", rooms, procs, **fields)
        return await self._run("scale", servers, shares,
                               {"connections": rooms * p.members, "rooms": rooms, **fields})

    async def churn(self, servers: ServerSet) -> dict[str, Any]:
        p = self.params
        # `senders` is the number of churners per room; each room keeps one anchor.
        fields = dict(members=1, senders=p.churners, size=p.size, duration=p.duration,
                      presence=p.presence)
        shares = self._shares(servers, "churn", p.rooms, self._procs(), **fields)
        settle = PRESENCE_SETTLE if p.presence else 0.0
        if settle:
            self.progress.note(f"churn: {settle:g} s for the broker's presence rebuild")
            await asyncio.sleep(settle)
        return await self._run("churn", servers, shares,
                               {"rooms": p.rooms, **fields, "settle_s": settle})
