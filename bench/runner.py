"""Run one workload against one started server design: the parent's side of it.

Spawns the generator processes (pinned to the generator cores), hands each
its share, waits until all are connected and joined, then reads CPU time of
every process, says go, shows progress, and reads CPU and memory again when
all results are in. Only what happens between go and the last result counts
towards CPU seconds; memory is also read before any client connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.pinning import CpuPlan
from bench.plan import Share
from bench.procstat import Sample, machine_busy_seconds, sample
from bench.progress import Progress
from bench.servers import ServerSet

READ_LIMIT = 16 << 20
EXIT_TIMEOUT = 30.0


class WorkerFailed(Exception):
    pass


@dataclass
class Proc:
    """A process whose CPU and memory a run reports."""

    role: str  # "server" or "loadgen"
    name: str
    pid: int


@dataclass
class RawRun:
    ready: list[dict[str, Any]]
    results: list[dict[str, Any]]
    procs: list[Proc]
    idle: dict[int, Sample]  # before any client connected
    held: dict[int, Sample]  # all clients connected and joined, at go
    end: dict[int, Sample]  # when the last result came in
    spawned_at: float
    go_at: float
    end_at: float
    loadgen_cores: int
    setup_cpu: dict[int, float] = field(default_factory=dict)
    machine_busy_s: float = 0.0  # every process on the machine, between go and end


def _sample_all(procs: list[Proc]) -> dict[int, Sample]:
    return {p.pid: sample(p.pid) for p in procs}


class _Workers:
    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.events: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self.readers: list[asyncio.Task[None]] = []

    async def spawn(self, shares: list[Share], cpus: CpuPlan, log: Path) -> None:
        for n, share in enumerate(shares):
            with log.with_name(f"{log.stem}-{n}.log").open("wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    *cpus.loadgen_prefix(), sys.executable, "-m", "bench.worker",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=err, limit=READ_LIMIT,
                )
            self.procs.append(proc)
            self.readers.append(asyncio.create_task(self._read(n, proc)))
            self.tell(n, share.to_line())

    async def _read(self, n: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            await self.events.put((n, json.loads(line)))
        await self.events.put((n, {"event": "exited", "code": await proc.wait()}))

    def tell(self, n: int, line: str) -> None:
        stdin = self.procs[n].stdin
        assert stdin is not None
        with contextlib.suppress(ConnectionError):
            stdin.write(line.encode() + b"\n")

    def tell_all(self, line: str) -> None:
        for n in range(len(self.procs)):
            self.tell(n, line)

    async def collect(self, kind: str, within: float,
                      on_progress: Any = None) -> list[dict[str, Any]]:
        """Wait for one `kind` event from every worker; progress events go to `on_progress`."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + within
        while len(got) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed(f"generator processes sent no {kind!r} within {within:.0f} s")
            try:
                n, event = await asyncio.wait_for(self.events.get(), left)
            except TimeoutError:
                continue
            if event["event"] == kind:
                got[n] = event
            elif event["event"] == "progress" and on_progress is not None:
                on_progress(n, event)
            elif event["event"] in ("failed", "exited"):
                raise WorkerFailed(f"generator {n}: {event}")
        return [got[n] for n in range(len(self.procs))]

    async def stop(self) -> None:
        self.tell_all("exit")
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self.readers:
            task.cancel()


async def run_shares(
    servers: ServerSet, shares: list[Share], cpus: CpuPlan, logs: Path, label: str,
    progress: Progress, setup_timeout: float = 600.0,
) -> RawRun:
    run_for = max(s.duration for s in shares) if shares[0].mode != "idle" else 0.0
    server_procs = [Proc("server", p.name, p.pid) for p in servers.procs]
    idle = _sample_all(server_procs)
    workers = _Workers()
    spawned_at = time.monotonic()
    try:
        await workers.spawn(shares, cpus, logs / f"{servers.file_stem}-{label}-loadgen")
        gen_procs = [Proc("loadgen", f"loadgen-{n + 1}", p.pid)
                     for n, p in enumerate(workers.procs)]
        gen_procs.append(Proc("loadgen", "bench (parent)", os.getpid()))
        procs = server_procs + gen_procs
        ready = await workers.collect("ready", setup_timeout)
        held = _sample_all(procs)
        # Generators did nothing before connecting but start up: count all they used.
        setup_cpu = {p.pid: held[p.pid].cpu_s - idle[p.pid].cpu_s for p in server_procs}
        setup_cpu |= {p.pid: held[p.pid].cpu_s for p in gen_procs[:-1]}
        busy_at_go = machine_busy_seconds()
        go_at = time.monotonic()
        workers.tell_all("go")
        progress.start()
        totals: dict[int, dict[str, Any]] = {}

        def on_progress(n: int, event: dict[str, Any]) -> None:
            totals[n] = event
            progress.update(
                f"{servers.name} {label}", time.monotonic() - go_at, run_for,
                sum(e["sent"] for e in totals.values()),
                sum(e["received"] for e in totals.values()),
            )

        results = await workers.collect("result", run_for + shares[0].drain + 60.0, on_progress)
        end_at = time.monotonic()
        end = _sample_all(procs)
        busy = machine_busy_seconds() - busy_at_go
        progress.done()
    finally:
        await workers.stop()
    return RawRun(ready, results, procs, idle, held, end, spawned_at, go_at, end_at,
                  len(cpus.loadgen), setup_cpu, busy)
