"""How long the loop waits on the store's commits, while the store's threads write.

    .venv/bin/python -m bench.storebench --pauses [--seconds 8] [--per-turn 50]

`broker.store.Store.commit` as the broker's loop calls it, as fast as it
goes on one core, with the store's threads running (as `open_store` starts
them: the applier writing the commit log to SQLite, rewinding SQLite's
write-ahead log past `--wal-limit`, and the checkpoints): each turn one row
of `--per-turn` 128-character chats, made by the broker's own sequencer,
round-robin over 20 rooms. Printed: commits and chats per second, how many
times the write-ahead log was rewound, and the longest commits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import broker.store as store_module
from broker.store import open_store
from broker.streams import Limits
from protocol.codec import encode_chat
from protocol.topics import room_topic

LIMITS = Limits(history_size=100, history_ttl=300.0, history_bytes=1 << 30,
                dedupe_window=120.0)
ROOMS = 20
SHOWN = 8  # longest commits printed


def measure(directory: Path, seconds: float, per_turn: int) -> dict[str, object]:
    store, sequencer = open_store(str(directory), LIMITS, time.time())
    journal = sequencer.journal
    assert journal is not None
    body = encode_chat("r", "x" * 128, "m1", "bench", 0)
    topics = [room_topic(f"room-{i}") for i in range(ROOMS)]
    commits: list[tuple[float, int]] = []
    turn = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sequencer.sequence(topics[turn % ROOMS], [body] * per_turn, time.time())
            started = time.perf_counter()
            store.commit(journal)
            took = time.perf_counter() - started
            commits.append((took, turn))
            turn += 1
    finally:
        store.close()  # the log's last records written, and counted
    rewinds = store.rewinds
    commits.sort(reverse=True)
    return {
        "seconds": seconds,
        "per_turn": per_turn,
        "commits": turn,
        "chats_per_s": round(turn * per_turn / seconds),
        "rewinds": rewinds,
        "longest_ms": [(round(1000 * took, 1), n) for took, n in commits[:SHOWN]],
    }


def describe(result: dict[str, object]) -> str:
    lines = [
        f"{result['commits']:,} commits of {result['per_turn']} chats in {result['seconds']} s "
        f"({result['chats_per_s']:,} chats/s), log rewound {result['rewinds']} times "
        "by the store's thread",
        "longest commits (ms, turn):",
    ]
    longest = result["longest_ms"]
    assert isinstance(longest, list)
    lines += [f"  {took:8.1f}  {turn:7d}" for took, turn in longest]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storebench --pauses", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--per-turn", type=int, default=50, help="chats per commit")
    ap.add_argument("--wal-limit", type=int, default=store_module.WAL_LIMIT,
                    help="bytes of log before a rewind (default: the broker's)")
    ap.add_argument("--core", type=int, default=None,
                    help="the core to run on (default: the highest this process may use)")
    args = ap.parse_args(argv)
    store_module.WAL_LIMIT = args.wal_limit
    core = max(os.sched_getaffinity(0)) if args.core is None else args.core
    os.sched_setaffinity(0, {core})
    with tempfile.TemporaryDirectory(prefix="chat-storepauses-") as directory:
        result = measure(Path(directory), args.seconds, args.per_turn)
    print(f"store pauses at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, core {core}, "
          f"log limit {args.wal_limit:,} bytes")
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
