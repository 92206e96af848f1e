"""How long a broker takes to read a full store back: `python -m bench.storebench --restart`.

For each case a store is written by the broker's own code (`bench.storeload`:
lone 128-character chats round-robin over the rooms, through the real
sequencer and `broker.store.Store`), closed, and then read back, `--repeat`
times each:

- `broker.store.open_store` in a fresh process (the time it logs, and that
  process's CPU and peak RSS once it holds every stream);
- a real broker (`python -m broker` with `CHAT_DATA_DIR`), from its start to
  the "broker ready" line of its log, beside a broker without a store;
- the store's size on disk.

The cases, all over 10,000 rooms except the last:

- `full-100`: 100 chats per room (`--history-size 100`), a million chats.
  At about 570 bytes each in the sequencer's accounting (the stamped chat,
  its history slot, its row) they need some 570 MB, more than the default
  256 MiB budget, so `--history-bytes` is raised to 1 GiB for this case:
  the largest store ten thousand full rooms make at this history size;
- `budget-full`: the shipped limits (1,000 per room, 256 MiB), written until
  the byte budget trims: what the defaults keep over 10,000 rooms (about
  470,000 chats, 47 a room);
- `100-rooms`: the shipped limits over 100 rooms: 1,000 chats a room.

No chat ages out in between: every case runs with `--history-ttl 3600`. The
file is read from the page cache (it was just written); a cold disk adds
its read time, about the store's size at the disk's sequential rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procstat import memory
from bench.servers import _clean_env, free_port
from bench.storeload import Generator, default_limits
from bench.storesize import disk_bytes
from broker.store import Store, open_store
from broker.streams import Limits

TTL = 3600.0
READY_TIMEOUT = 300.0
_READ_IN = re.compile(rb"read in ([0-9.]+) s")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    rooms: int
    history_size: int
    history_bytes: int
    what: str

    def limits(self) -> Limits:
        return Limits(self.history_size, TTL, self.history_bytes, 120.0)

    def env(self, directory: Path) -> dict[str, str]:
        return {"CHAT_DATA_DIR": str(directory), "CHAT_HISTORY_SIZE": str(self.history_size),
                "CHAT_HISTORY_BYTES": str(self.history_bytes), "CHAT_HISTORY_TTL": str(TTL)}


DEFAULT = default_limits()
CASES = {c.name: c for c in (
    Case("full-100", 10_000, 100, 1 << 30,
         "10,000 rooms × 100 chats (--history-size 100, --history-bytes 1 GiB)"),
    Case("budget-full", 10_000, DEFAULT.history_size, DEFAULT.history_bytes,
         "10,000 rooms, shipped limits (1,000 per room, 256 MiB): as much as the budget keeps"),
    Case("100-rooms", 100, DEFAULT.history_size, DEFAULT.history_bytes,
         "100 rooms, shipped limits: 1,000 chats a room"),
)}


def build(case: Case, directory: Path) -> dict[str, Any]:
    """Write the case's store through the broker's code; what it holds."""
    started = time.monotonic()
    gen = Generator(case.rooms, case.limits())
    store = Store(directory / "streams.db")
    store.start_checkpoints()  # as a broker's store runs
    try:
        for turn in gen.fill():
            while store.commit(turn.journal):
                pass
    finally:
        store.close()
    return {"chats": gen.held, "sequenced": gen.sequenced, "rooms": len(gen.sequencer),
            "disk_bytes": disk_bytes(directory), "build_s": round(time.monotonic() - started, 1)}


def open_once(case: Case, directory: Path) -> dict[str, Any]:
    """`open_store` in a fresh process: its wall time, CPU and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.storerestart", "--open", str(directory),
         "--limits", f"{case.history_size},{case.history_bytes}"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise RuntimeError(f"open_store failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _open_here(limits: Limits, directory: Path) -> None:
    cpu0, wall0 = time.process_time(), time.monotonic()
    store, sequencer = open_store(str(directory), limits, time.time())
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    chats = sum(len(s.history) for s in sequencer.streams())
    _, peak = memory(os.getpid())
    store.close()
    print(json.dumps({"seconds": round(wall, 3), "cpu_s": round(cpu, 3), "rooms": len(sequencer),
                      "chats": chats, "peak_rss_mib": round(peak / (1 << 20), 1)}))


def broker_ready(env: dict[str, str]) -> dict[str, Any]:
    """Start a broker; seconds until its log says "broker ready" (and the store's own figure)."""
    settings = {"CHAT_BROKER_PUB": f"tcp://127.0.0.1:{free_port()}",
                "CHAT_BROKER_SUB": f"tcp://127.0.0.1:{free_port()}", "CHAT_LOG_LEVEL": "INFO",
                **env}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "broker"], env=_clean_env(settings),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    log = b""
    ready = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            deadline = started + READY_TIMEOUT
            while ready is None:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"no 'broker ready' from the broker:\n{log[-2000:]!r}")
                if sel.select(1.0):
                    chunk = os.read(proc.stderr.fileno(), 65536)
                    log += chunk
                    if b"broker ready" in log:
                        ready = time.monotonic() - started
    finally:
        _stop(proc)
    read_in = _READ_IN.search(log)
    return {"ready_s": round(ready, 3),
            "store_read_s": float(read_in.group(1)) if read_in else None}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # A SIGTERM that lands while the broker writes a log line is lost (logging
    # swallows the exception its handler raises): ask again, then kill.
    for _ in range(3):
        proc.terminate()
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.wait(10)


def measure(case: Case, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="storerestart-") as tmp:
        directory = Path(tmp)
        built = build(case, directory)
        opens = [open_once(case, directory) for _ in range(repeat)]
        brokers = [broker_ready(case.env(directory)) for _ in range(repeat)]
        after = disk_bytes(directory)
    bare = [broker_ready({}) for _ in range(repeat)]
    return {
        "case": case.name, "what": case.what, **built, "disk_bytes_after": after,
        "open_store_s": statistics.median(o["seconds"] for o in opens),
        "open_store_range": [min(o["seconds"] for o in opens), max(o["seconds"] for o in opens)],
        "open_store_cpu_s": statistics.median(o["cpu_s"] for o in opens),
        "opened_chats": opens[0]["chats"], "opened_rooms": opens[0]["rooms"],
        "peak_rss_mib": statistics.median(o["peak_rss_mib"] for o in opens),
        "broker_ready_s": statistics.median(b["ready_s"] for b in brokers),
        "broker_ready_range": [min(b["ready_s"] for b in brokers),
                               max(b["ready_s"] for b in brokers)],
        "broker_ready_without_store_s": statistics.median(b["ready_s"] for b in bare),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | rooms | chats held | on disk | bytes per 1,000 chats | open_store s, median "
        "(range) | its CPU s | peak RSS after open MiB | broker start to ready s, median "
        "(range) | without a store s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lo, hi = r["open_store_range"]
        blo, bhi = r["broker_ready_range"]
        lines.append(
            f"| {r['what']} | {r['opened_rooms']:,} | {r['opened_chats']:,} "
            f"| {r['disk_bytes'] / (1 << 20):,.1f} MiB "
            f"| {1000 * r['disk_bytes'] / r['chats']:,.0f} "
            f"| **{r['open_store_s']:.2f}** ({lo:.2f}-{hi:.2f}) | {r['open_store_cpu_s']:.2f} "
            f"| {r['peak_rss_mib']:,.0f} | **{r['broker_ready_s']:.2f}** ({blo:.2f}-{bhi:.2f}) "
            f"| {r['broker_ready_without_store_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storebench --restart",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated, from {','.join(CASES)}")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write everything here")
    ap.add_argument("--open", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--limits", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.open is not None:  # the fresh process of open_once
        size, budget = (int(x) for x in args.limits.split(","))
        _open_here(Limits(size, TTL, budget, 120.0), args.open)
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; choose from {','.join(CASES)}")
    loads = [_load()]
    results = []
    for name in names:
        print(f"{name}: {CASES[name].what}", file=sys.stderr, flush=True)
        results.append(measure(CASES[name], args.repeat))
        loads.append(_load())
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.json:
        args.json.write_text(json.dumps({"date": date, "load_average": loads,
                                         "results": results}, indent=1) + "\n")
    print(f"store restart at {date}, load average {' -> '.join(loads)}\n")
    print(markdown(results))
    return 0


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
