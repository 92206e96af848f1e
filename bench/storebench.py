"""The broker's store against the layouts it could have had, on one core.

    .venv/bin/python -m bench.storebench [--chats 200000] [--rooms 100,10000]
                                         [--per-turn 1024,64] [--repeat 3] [--json FILE]
    .venv/bin/python -m bench.storebench --restart     # a full store read back (bench.storerestart)
    .venv/bin/python -m bench.storebench --truncated   # what each store does with a file cut short
    .venv/bin/python -m bench.storebench --pauses      # the loop's longest waits on commits

Every candidate is given the same turns, made by the broker's own sequencer
(`bench.storeload`): lone 128-character chats round-robin over the rooms,
first a fill until history is full, then steady state, where every chat
stored releases about one. Timed is only the writing of the steady-state
turns, each in one transaction, as the broker's loop commits them; each
repeat is more steady-state turns on the same store, so a store is filled
once per candidate and room count:

- `sqlite-log`: `broker.store.Store` itself, on the broker's journal (two
  append-only logs numbered by seq and a table of streams; WAL,
  synchronous=NORMAL, checkpoints every second on a thread of their own,
  as `broker.store.open_store` starts them): each turn committed to the
  store's commit log and then written to the file (`Store.apply`) in a
  transaction of its own, as the broker did before its commit log (its
  applier now writes many turns per transaction);
- `sqlite-keyed`: SQLite with the same settings (and the broker's own
  `Checkpointer`), a chat row per chat keyed by (room, offset) in a
  WITHOUT ROWID table, released chats deleted by key, and every room the
  turn touched upserted into the streams table;
- `lmdb`: the same keys (room topic + offset, big-endian) in LMDB with
  sync=False and metasync=False (as durable as WAL with synchronous=NORMAL:
  a crashed process loses nothing, a power cut may lose the last commits),
  streams in a second database. Skipped, with a note, when the `lmdb`
  package is not installed (`pip install -e '.[bench]'`).

Reported: chats stored per CPU-second of this process (user + system, all
its threads: the store's work happens in it), chats/s by the wall clock, and the bytes on
disk of everything in the store's directory per 1,000 chats it holds at
the end (128-character chats, about 250 bytes of stamped JSON each).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.storeload import SIZE, Generator, Turn, default_limits
from bench.storesize import disk_bytes
from broker.store import WAL_LIMIT, Checkpointer, Store

_OFFSET = struct.Struct(">Q")
_AT = struct.Struct("<d")
LMDB_MAP_SIZE = 64 << 30  # address space only: the file grows with what is written


class Candidate(Protocol):
    def write(self, turn: Turn) -> None: ...
    def close(self) -> None: ...


class SqliteLog:
    """The broker's own store."""

    def __init__(self, directory: Path) -> None:
        self.store = Store(directory / "streams.db")
        self.store.start_checkpoints()  # as open_store does

    def write(self, turn: Turn) -> None:
        # commit takes the journal's changes: a turn is written once, as in the broker.
        while self.store.commit(turn.journal):  # releases beyond a chunk: more commits
            pass
        self.store.apply()  # the turn in the file, in a transaction of its own

    def close(self) -> None:
        self.store.close()


_KEYED_SCHEMA = """
CREATE TABLE streams (topic BLOB PRIMARY KEY, epoch TEXT NOT NULL, top INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE chats (topic BLOB NOT NULL, offset INTEGER NOT NULL, at REAL NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (topic, offset)) WITHOUT ROWID;
"""


class SqliteKeyed:
    """A chat per row at (room, offset); the streams upserted per room each turn."""

    def __init__(self, directory: Path) -> None:
        path = directory / "keyed.db"
        db = self.db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # the broker store's settings
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        db.executescript(_KEYED_SCHEMA)
        self.checkpoints = Checkpointer(path)
        self.checkpoints.start()

    def write(self, turn: Turn) -> None:
        db = self.db
        db.execute("BEGIN")
        db.executemany("INSERT INTO chats VALUES (?, ?, ?, ?)", turn.appended)
        if turn.released:
            db.executemany("DELETE FROM chats WHERE topic = ? AND offset = ?", turn.released)
        db.executemany("INSERT INTO streams VALUES (?, ?, ?) ON CONFLICT (topic) "
                       "DO UPDATE SET top = excluded.top", turn.tops)
        db.execute("COMMIT")

    def close(self) -> None:
        self.checkpoints.stop()
        self.db.close()


class Lmdb:
    """The same keys in LMDB: room topic + big-endian offset."""

    def __init__(self, directory: Path) -> None:
        import lmdb

        self.env = lmdb.open(str(directory), map_size=LMDB_MAP_SIZE, max_dbs=2, sync=False,
                             metasync=False)
        self.chats = self.env.open_db(b"chats")
        self.streams = self.env.open_db(b"streams")

    def write(self, turn: Turn) -> None:
        pack, at = _OFFSET.pack, _AT.pack
        with self.env.begin(write=True) as txn:
            chats, streams = self.chats, self.streams
            for topic, offset, when, body in turn.appended:
                txn.put(topic + pack(offset), at(when) + body, db=chats)
            for topic, offset in turn.released:
                txn.delete(topic + pack(offset), db=chats)
            for topic, epoch, top in turn.tops:
                txn.put(topic, epoch.encode() + pack(top), db=streams)

    def close(self) -> None:
        self.env.close()


def lmdb_missing() -> str | None:
    try:
        import lmdb  # noqa: F401
    except ImportError:
        return "lmdb not installed (pip install lmdb, or -e '.[bench]'): its rows are skipped"
    return None


CANDIDATES: dict[str, Callable[[Path], Candidate]] = {
    "sqlite-log": SqliteLog,
    "sqlite-keyed": SqliteKeyed,
    "lmdb": Lmdb,
}


@dataclass(slots=True)
class Row:
    candidate: str
    rooms: int
    per_turn: int
    chats: int
    cpu_s: float
    wall_s: float
    chats_per_cpu_s: float
    chats_per_s: float
    held: int  # chats in the store at the end of the run
    disk_bytes: int
    bytes_per_1000: float


@dataclass(frozen=True, slots=True)
class Params:
    rooms: tuple[int, ...] = (100, 10_000)
    per_turn: tuple[int, ...] = (1024, 64)
    chats: int = 200_000  # timed, per candidate and chats per turn
    size: int = SIZE
    repeat: int = 3
    candidates: tuple[str, ...] = tuple(CANDIDATES)


@dataclass(slots=True)
class Plan:
    """One room count's turns, made once and given to every candidate."""

    rooms: int
    fill: list[Turn]
    timed: list[tuple[int, list[Turn]]]  # (chats per turn, its turns), repeats one after another
    held: int  # chats held once every turn is written


def plan(rooms: int, params: Params) -> Plan:
    gen = Generator(rooms, default_limits(), params.size)
    fill = list(gen.fill())
    timed = [(n, gen.turns(params.chats, n)) for _ in range(params.repeat)
             for n in params.per_turn]
    return Plan(rooms, fill, timed, gen.held)


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def measure(name: str, p: Plan, params: Params) -> list[Row]:
    """Fill a new store once, then time each batch of steady-state turns in turn."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="storebench-") as tmp:
        directory = Path(tmp)
        store = CANDIDATES[name](directory)
        try:
            for turn in p.fill:
                store.write(turn)
            for per_turn, turns in p.timed:
                chats = sum(len(t.appended) for t in turns)
                with _gc_off():
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    for turn in turns:
                        store.write(turn)
                    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                rows.append(Row(name, p.rooms, per_turn, chats, round(cpu, 3), round(wall, 3),
                                round(chats / cpu), round(chats / wall), 0, 0, 0.0))
        finally:
            store.close()
        size = disk_bytes(directory)
    for row in rows:
        row.held, row.disk_bytes = p.held, size
        row.bytes_per_1000 = round(1000 * size / p.held)
    return rows


def run(params: Params, note: Callable[[str], None]) -> dict[str, Any]:
    missing = lmdb_missing() if "lmdb" in params.candidates else None
    names = [n for n in params.candidates if not (n == "lmdb" and missing)]
    loads = [_load()]
    results: list[Row] = []
    for rooms in params.rooms:
        p = plan(rooms, params)
        note(f"{rooms:,} rooms: fill {sum(len(t.appended) for t in p.fill):,} chats, "
             f"{p.held:,} held at the end")
        for name in names:
            got = measure(name, p, params)
            results += got
            note(" | ".join(f"{r.candidate} {r.per_turn}/turn: {r.chats_per_cpu_s:,}"
                            for r in got) + " chats per CPU-second")
        loads.append(_load())
    return {"params": asdict(params), "skipped": missing, "load_average": loads,
            "sqlite": sqlite3.sqlite_version, "lmdb": _lmdb_version(),
            "rows": [asdict(r) for r in results], "table": summary(results)}


def _lmdb_version() -> str | None:
    try:
        import lmdb
    except ImportError:
        return None
    return ".".join(str(v) for v in lmdb.version())


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def summary(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Medians over the repeats, per candidate, room count and chats per turn."""
    cells: dict[tuple[str, int, int], list[Row]] = {}
    for r in rows:
        cells.setdefault((r.candidate, r.rooms, r.per_turn), []).append(r)
    out = []
    for (candidate, rooms, per_turn), got in cells.items():
        rates = sorted(r.chats_per_cpu_s for r in got)
        out.append({
            "candidate": candidate, "rooms": rooms, "per_turn": per_turn, "runs": len(got),
            "chats_per_cpu_s": round(statistics.median(rates)),
            "range": [rates[0], rates[-1]],
            "us_per_chat": round(1e6 / statistics.median(rates), 2),
            "chats_per_s": round(statistics.median(r.chats_per_s for r in got)),
            "held": got[0].held,
            "bytes_per_1000": round(statistics.median(r.bytes_per_1000 for r in got)),
        })
    return out


def markdown(session: dict[str, Any]) -> str:
    lines = [
        "| store | rooms | chats per transaction | chats stored per CPU-second, median "
        "(range) | CPU µs per chat | chats/s (wall clock) | chats held | bytes on disk per "
        "1,000 chats held |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in session["table"]:
        low, high = c["range"]
        lines.append(
            f"| {c['candidate']} | {c['rooms']:,} | {c['per_turn']:,} "
            f"| **{c['chats_per_cpu_s']:,}** ({low:,}-{high:,}) | {c['us_per_chat']:.2f} "
            f"| {c['chats_per_s']:,} | {c['held']:,} | {c['bytes_per_1000']:,} |"
        )
    if session["skipped"]:
        lines += ["", f"- {session['skipped']}"]
    return "\n".join(lines)


_READ_ALL = {
    # Every value of the store's one table, in a fresh process: a crash shows as a signal.
    "sqlite-log": "import sqlite3, sys\n"
                  "db = sqlite3.connect(sys.argv[1] + '/streams.db')\n"
                  "try:\n"
                  "    print(db.execute('SELECT count(*), sum(length(body)) '\n"
                  "                     'FROM chats').fetchone())\n"
                  "except sqlite3.DatabaseError as exc:\n"
                  "    print(f'{type(exc).__name__} {exc.sqlite_errorname}: {exc}')\n",
    "lmdb": "import lmdb, sys\n"
            "env = lmdb.open(sys.argv[1], max_dbs=2, readonly=True, lock=False)\n"
            "with env.begin(db=env.open_db(b'chats', create=False)) as txn:\n"
            "    print(sum(len(v) for _, v in txn.cursor()))\n",
}


def truncated(note: Callable[[str], None]) -> list[str]:
    """Each store filled (100 rooms), closed, cut to half its size and read whole again."""
    gen = Generator(100, default_limits())
    turns = list(gen.fill())
    lines = []
    for name, script in _READ_ALL.items():
        if name == "lmdb" and lmdb_missing():
            lines.append(f"- {name}: {lmdb_missing()}")
            continue
        with tempfile.TemporaryDirectory(prefix="storebench-") as tmp:
            store = CANDIDATES[name](Path(tmp))
            for turn in turns:
                store.write(turn)
            store.close()
            [data] = [p for p in Path(tmp).iterdir() if p.name in ("streams.db", "data.mdb")]
            os.truncate(data, data.stat().st_size // 2)
            done = subprocess.run([sys.executable, "-c", script, tmp], capture_output=True,
                                  text=True, check=False, stdin=subprocess.DEVNULL)
        if done.returncode < 0:
            outcome = f"killed by {signal.Signals(-done.returncode).name}"
        else:
            outcome = f"exit {done.returncode}: {(done.stdout or done.stderr).strip()[-200:]}"
        lines.append(f"- {name}, {data.name} cut to half its size, read whole: {outcome}")
        note(lines[-1])
    return lines


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--restart" in argv:
        import bench.storerestart as storerestart

        argv.remove("--restart")
        return storerestart.main(argv)
    if "--pauses" in argv:
        import bench.storepauses as storepauses

        argv.remove("--pauses")
        return storepauses.main(argv)
    if "--truncated" in argv:
        print("\n".join(truncated(lambda _: None)))
        return 0
    d = Params()
    ap = argparse.ArgumentParser(prog="python -m bench.storebench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--restart", action="store_true",
                    help="time reading a full store back instead (see bench.storerestart)")
    ap.add_argument("--pauses", action="store_true",
                    help="instead: the longest commits, rewinds of the log included "
                    "(see bench.storepauses)")
    ap.add_argument("--truncated", action="store_true",
                    help="instead: what each store does with its file cut to half its size")
    ap.add_argument("--rooms", type=_ints, default=d.rooms, help="comma-separated room counts")
    ap.add_argument("--per-turn", type=_ints, default=d.per_turn,
                    help="comma-separated chats per transaction")
    ap.add_argument("--chats", type=int, default=d.chats,
                    help="chats timed per candidate and chats per transaction")
    ap.add_argument("--size", type=int, default=d.size, help="message characters")
    ap.add_argument("--repeat", type=int, default=d.repeat)
    ap.add_argument("--candidates", default=",".join(d.candidates),
                    help=f"comma-separated, from {','.join(CANDIDATES)}")
    ap.add_argument("--core", type=int, default=None,
                    help="the core to run on (default: the highest this process may use)")
    ap.add_argument("--json", type=Path, default=None, help="also write everything here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    names = tuple(n.strip() for n in args.candidates.split(",") if n.strip())
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        ap.error(f"unknown candidates {unknown}; choose from {','.join(CANDIDATES)}")
    params = Params(args.rooms, args.per_turn, args.chats, args.size, args.repeat, names)
    # One core: the stores are single-threaded, and a core of its own keeps it so.
    core = max(os.sched_getaffinity(0)) if args.core is None else args.core
    os.sched_setaffinity(0, {core})

    def note(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    session = run(params, note)
    session["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    session["python"] = sys.version.split()[0]
    session["core"] = core
    if args.json:
        args.json.write_text(json.dumps(session, indent=1) + "\n")
    print(f"storebench at {session['date']}, core {core}, SQLite {session['sqlite']}, "
          f"LMDB {session['lmdb'] or 'absent'}, load average "
          f"{' -> '.join(session['load_average'])}\n")
    print(markdown(session))
    return 0


if __name__ == "__main__":
    sys.exit(main())
