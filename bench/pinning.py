"""Which cores the servers get and which the load generator gets.

Servers and generator on separate cores keep them from stealing each other's
CPU, so the CPU seconds each side reports are its own. Every server design
gets the same server cores, whether it runs one process or four.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CpuPlan:
    servers: tuple[int, ...]
    loadgen: tuple[int, ...]
    pinned: bool
    note: str

    def server_prefix(self) -> list[str]:
        return _taskset(self.servers) if self.pinned else []

    def loadgen_prefix(self) -> list[str]:
        return _taskset(self.loadgen) if self.pinned else []

    def to_json(self) -> dict[str, object]:
        return {
            "servers": list(self.servers),
            "loadgen": list(self.loadgen),
            "pinned": self.pinned,
            "note": self.note,
        }


def _taskset(cpus: Sequence[int]) -> list[str]:
    return ["taskset", "-c", ",".join(str(c) for c in cpus)]


def plan_cpus(available: Sequence[int], wanted: bool, have_taskset: bool) -> CpuPlan:
    """Split the cores: the generator gets the upper half (at least one), servers the rest."""
    cpus = tuple(sorted(available))
    if not wanted:
        return CpuPlan(cpus, cpus, False, "pinning off (--no-pin): everything shares all cores")
    if not have_taskset:
        return CpuPlan(cpus, cpus, False, "taskset not found: everything shares all cores")
    if len(cpus) < 2:
        return CpuPlan(cpus, cpus, False, "one core only: servers and generator share it")
    split = len(cpus) - max(1, len(cpus) // 2)
    servers, loadgen = cpus[:split], cpus[split:]
    return CpuPlan(
        servers,
        loadgen,
        True,
        f"servers pinned to cores {_list(servers)}, load generator to cores {_list(loadgen)} "
        "(taskset -c)",
    )


def _list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def machine_plan(wanted: bool) -> CpuPlan:
    return plan_cpus(sorted(os.sched_getaffinity(0)), wanted, shutil.which("taskset") is not None)
