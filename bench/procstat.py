"""CPU time and memory of a process, read from /proc (Linux).

`VmHWM` is the kernel's own peak-RSS mark, so no sampling can miss a spike;
CPU time covers every thread of the process (node's helper threads too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_s: float
    rss_bytes: int
    peak_rss_bytes: int


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = f.read().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def memory(pid: int) -> tuple[int, int]:
    """(RSS, peak RSS) in bytes."""
    rss = peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return rss, peak


def sample(pid: int) -> Sample:
    """A reading of a live process; zeros if it is already gone."""
    try:
        cpu = cpu_seconds(pid)
        rss, peak = memory(pid)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return Sample(0.0, 0, 0)
    return Sample(cpu, rss, peak)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idling and waiting for I/O, since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already inside user time
    busy = sum(fields[:8]) - idle if len(fields) >= 8 else sum(fields) - idle
    return busy / _TICKS


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
