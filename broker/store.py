"""The broker's durable store: its rooms' streams in SQLite, on local disk.

What the sequencer keeps in memory (epochs, tops, history, remembered
msgIds) is written here as it changes, before anything of a loop turn
leaves the broker: an ack or a delivery is only ever sent for a chat
already in the store. A turn's commit is one record copied into the commit
log (broker.commitlog), a memory-mapped file; a thread of the store
(`Applier`) writes the records to the SQLite file in batches, one
transaction each, and deletes the log's segments once they are there. On
start the broker applies what the log still holds and reads the file back,
so a restart (even `kill -9`) keeps every room's epoch and offsets, and
members that recover with `since` see no gap.

SQLite, from the standard library, in WAL mode (`synchronous=NORMAL`); its
write-ahead log is synced to the disk before the commit log's segments
written to it are deleted, so what reached the file is never lost with them.
The commit log does not wait for the disk: a crashed or killed process
loses nothing committed (the operating system has it); a power cut or
kernel crash may lose the last commits, never the file's integrity. SQLite is built to read
corrupt files without crashing and says so (SQLITE_CORRUPT, SQLITE_NOTADB),
which is what lets the broker move a bad file aside and start again instead
of serving wrong offsets. The layout (see broker.journal) appends to two
logs, so a transaction touches a few pages whatever the number of rooms.
Why SQLite and not LMDB, with figures: docs/benchmarks.md, "The store".

The directory is locked (`streams.lock`, flock) while a broker uses it: a
second broker on the same directory is refused at start.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from broker.commitlog import CommitLog, Segment, decode_into, encode, found, payloads
from broker.journal import Journal, Journaled
from broker.streams import Limits, Sequencer, Stream, new_epoch
from protocol.stream import read_stamp, unpack

log = logging.getLogger("broker.store")

FILE_NAME = "streams.db"
SCHEMA_VERSION = 1
# Chat rows taken from the journal's releases per commit at most: a sweep
# that released a million rows is spread over many turns instead of
# stalling one.
RELEASE_CHUNK = 4096
# Released rows are deleted together, once this many wait or the oldest has
# waited RELEASE_EVERY: a delete in every small commit rewrote the log's
# oldest page each time, a fifth of a one-chat commit. A row released but
# not yet deleted is harmless: a restart applies the limits again and
# releases it anew.
RELEASE_BATCH = 1024
RELEASE_EVERY = 1.0  # seconds
APPLY_EVERY = 0.2  # seconds between the applier's passes over the commit log
APPLY_CHUNK = 256 * 1024  # bytes of records per transaction of the applier, at most
# Segments of the commit log not yet written to the file (4 MiB each) past
# which the loop writes them itself: the log's backlog, and the time a
# restart takes to apply it, stay bounded when chats come faster than the
# file takes them.
BACKLOG_SEGMENTS = 16
YIELD_EVERY = 64  # records decoded between the applier's yields of the GIL
READ_SLACK = 64 * 1024  # bytes read past a budget of records, for the record that ends it
APPLIER_NICE = 10  # the applier thread's nice value, above the loop's 0
SWITCH_INTERVAL = 0.0005  # seconds (sys.setswitchinterval) while the store's threads run
LOCK_NAME = "streams.lock"
CHECKPOINT_EVERY = 1.0  # seconds
LOCK_WAIT_MS = 5000  # how long a write waits for the checkpoint thread at most
# Past this the applier rewinds SQLite's write-ahead log (see _rewind_log):
# a checkpoint of what the checkpoint thread has not copied yet, while the
# applier (not the broker's loop) waits.
WAL_LIMIT = 64 * 1024 * 1024  # bytes
LOG_CHECK_EVERY = 0.1  # seconds between looks at the log's size (a stat call)
WARN_EVERY = 10.0  # seconds between warnings of failing checkpoints

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    topic BLOB PRIMARY KEY,
    epoch TEXT NOT NULL,
    top INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chats (
    seq INTEGER PRIMARY KEY,
    topic BLOB NOT NULL,
    low INTEGER NOT NULL,
    high INTEGER NOT NULL,
    at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS msgids (
    seq INTEGER PRIMARY KEY,
    topic BLOB NOT NULL,
    msg_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    at REAL NOT NULL
);
"""

# SQLite's primary result codes that mean "this file is not a good store".
_BAD_FILE = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_FULL = 13  # SQLITE_FULL


class CorruptStore(Exception):
    """The file reads, but what it holds cannot be a store this broker wrote."""


class StoreLocked(Exception):
    """Another process has the store open."""


class StoreFailed(Exception):
    """A write did not happen: nothing of it is in the store."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        if isinstance(error, sqlite3.Error):
            self.full = _code(error) == _FULL
        else:
            self.full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _code(error: sqlite3.Error) -> int:
    return int(getattr(error, "sqlite_errorcode", 0)) & 0xFF


class Store:
    """One SQLite file: the streams of the rooms this broker sequences."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # One broker per store: a lock held as long as the process lives.
        self._lock = open(path.with_name(LOCK_NAME), "a+b")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreLocked(str(path)) from None
        # Used by the applier thread, and by the loop only to load or to
        # probe, always under _writing.
        self._db = _connect(path, timeout=LOCK_WAIT_MS / 1000, check_same_thread=False)
        self._writing = threading.Lock()
        self._applier: Applier | None = None
        # The applier's last write failed (the file cannot take the log):
        # the broker refuses chats until one works.
        self.failing: StoreFailed | None = None
        self._behind = False  # the log's backlog is past BACKLOG_SEGMENTS
        self._wal = path.with_name(path.name + "-wal")
        self._next_log_check = 0.0
        self._checkpoints: Checkpointer | None = None
        self.rewinds = 0  # times the write-ahead log was rewound
        # Released chat rows not yet deleted, and when the oldest must be.
        self._releasing: list[tuple[int, Journaled | None]] = []
        self._release_by = 0.0
        db = self._db
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise CorruptStore(f"journal mode {mode!r} instead of WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # see _applied for the log's segments
            # Checkpoints (the log copied into the file, with the only fsyncs)
            # run on their own thread (Checkpointer), never inside a write of
            # the applier. Past a checkpoint the log is cut back to WAL_LIMIT.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SystemExit(
                    f"chat-broker: {path} has store version {version}, this broker reads "
                    f"{SCHEMA_VERSION}: use the broker that wrote it, or another --data-dir"
                )
            if version == 0:  # a new file
                db.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            self._log = CommitLog(path.parent)
        except BaseException:
            self._db.close()
            self._lock.close()
            raise

    def start_checkpoints(self) -> None:
        """Start the threads: the applier (commit log to file) and the checkpoints."""
        # A thread that wants the GIL waits this long before the holder is
        # made to let go (5 ms by default): the loop's thread, woken by a
        # chat while the applier holds it, waits at most this.
        sys.setswitchinterval(SWITCH_INTERVAL)
        if self._checkpoints is None:
            self._checkpoints = Checkpointer(self.path)
            self._checkpoints.start()
        if self._applier is None:
            self._applier = Applier(self)
            self._applier.start()

    def close(self, apply: bool = True) -> None:
        """Apply the whole commit log to the file (`apply`) and close it; what
        is not applied stays in the log, for the next start."""
        if self._applier is not None:
            self._applier.stop()
        self._log.close()
        if apply:
            with contextlib.suppress(StoreFailed, CorruptStore):
                self.apply(flush=True)
        if self._checkpoints is not None:
            self._checkpoints.stop()
        self._db.close()  # the last connection: SQLite checkpoints the log into the file
        self._lock.close()

    def size(self) -> int:
        """Bytes on disk, write-ahead log and commit log included."""
        return (sum(p.stat().st_size for p in _files(self.path) if p.exists())
                + self._log.bytes_on_disk())

    def unwritten(self) -> int:
        """Bytes of the commit log not yet written to the file."""
        return sum(segment.end - segment.applied for segment in self._log.pending())

    def load(self, limits: Limits, now: float,
             make_epoch: Callable[[], str] = new_epoch) -> Sequencer:
        """Every room's stream as the store has it, with today's limits applied.

        The commit log is applied to the file first. If the file cannot take
        it (a full disk), it is read in a transaction that is then rolled
        back, and the log keeps the records until the applier writes them.
        Raises sqlite3.DatabaseError or CorruptStore on a file that cannot be
        trusted; a chat row left over from a room's earlier epoch is released.
        """
        with self._writing:
            pending, marks = self._unapplied()
            try:
                self._write(pending, flush=True)
            except StoreFailed as exc:
                self.failing = exc
                return self._read_unwritten(pending, limits, now, make_epoch)
            self._applied(marks)
            self.failing = None
            return self._read(pending, limits, now, make_epoch)

    def _read_unwritten(self, pending: Journal, limits: Limits, now: float,
                        make_epoch: Callable[[], str]) -> Sequencer:
        """The file as it would be with `pending` written, in a transaction rolled back.

        Without spilling its cache the transaction needs no space on disk.
        Raises StoreFailed if even so the file does not take it.
        """
        db = self._db
        db.execute("PRAGMA cache_spill = OFF")
        try:
            db.execute("BEGIN")
            try:
                self._statements(pending, deleting=[])
                return self._read(pending, limits, now, make_epoch)
            except sqlite3.OperationalError as exc:
                raise StoreFailed(exc) from exc
            finally:
                db.execute("ROLLBACK")
        finally:
            db.execute("PRAGMA cache_spill = ON")

    def _read(self, pending: Journal, limits: Limits, now: float,
              make_epoch: Callable[[], str]) -> Sequencer:
        db = self._db
        next_chat = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM chats").fetchone()[0]
        next_key = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM msgids").fetchone()[0]
        journal = Journal(max(next_chat, pending.next_chat), max(next_key, pending.next_key))
        sequencer = Sequencer(limits, make_epoch, journal)
        streams: dict[bytes, Stream] = {}
        for topic, epoch, top in db.execute("SELECT topic, epoch, top FROM streams"):
            if not (isinstance(topic, bytes) and isinstance(epoch, str) and isinstance(top, int)
                    and top >= 0):
                raise CorruptStore("a stream row of the wrong types")
            stream = sequencer.restore_stream(topic, epoch, top)
            if stream is None:
                raise CorruptStore(f"a stream row for {topic!r}, which is not a room's topic")
            streams[topic] = stream
        rows = db.execute("SELECT seq, topic, low, high, at, body FROM chats ORDER BY seq")
        for seq, topic, low, high, at, body in rows:
            stream = streams.get(topic)
            if not isinstance(body, bytes) or not isinstance(low, int) or not isinstance(high, int):
                raise CorruptStore(f"chat row {seq} of the wrong types")
            chats = unpack(body)
            first, last = read_stamp(chats[0]), read_stamp(chats[-1])
            if first is None or last is None:
                raise CorruptStore(f"chat row {seq} holds chats without epoch and offset")
            if stream is None or first[0] != stream.epoch_bytes:
                journal.released.append((seq, None))  # a room's earlier epoch
                continue
            if (first[1], last[1]) != (low, high) or high - low + 1 != len(chats):
                raise CorruptStore(f"chat row {seq} does not hold offsets {low} to {high}")
            try:
                sequencer.restore_chats(stream, seq, low, float(at), chats)
            except ValueError as exc:
                raise CorruptStore(str(exc)) from None
        keys = db.execute("SELECT seq, topic, msg_key, position, at FROM msgids ORDER BY seq")
        for seq, topic, key, position, at in keys:
            stream = streams.get(topic)
            if stream is None:
                continue  # forgotten with its room; deleted with the msgIds before it
            if not isinstance(key, str) or not isinstance(position, int) or position > stream.top:
                raise CorruptStore(f"msgId row {seq} does not fit its room's stream")
            sequencer.restore_key(stream, seq, key, position, float(at))
        sequencer.settle(now)
        return sequencer

    def commit(self, journal: Journal) -> bool:
        """Append what the journal holds to the commit log: one copy into memory.

        At most RELEASE_CHUNK released rows go per commit (a backlog halves
        each time); True if the journal still holds more. Raises StoreFailed
        when nothing was written (no space for a new segment of the log).
        """
        if not journal:
            return False
        backlog = len(journal.released)
        taken = journal.take(RELEASE_CHUNK if backlog < 4 * RELEASE_CHUNK else backlog // 2)
        record = encode(taken)
        try:
            started = self._log.append(record)
        except OSError as exc:
            raise StoreFailed(exc) from exc
        if started:
            self._behind = len(self._log.pending()) > BACKLOG_SEGMENTS
        if self._behind:
            # The applier falls behind (turns come faster than the file takes
            # them): each turn also writes twice its bytes of the oldest records.
            with contextlib.suppress(StoreFailed):  # `failing`: refused from the next turn
                self.apply(budget=2 * len(record))
            self._behind = len(self._log.pending()) > BACKLOG_SEGMENTS // 2
        return bool(journal.released)

    def apply(self, flush: bool = False, budget: int | None = None) -> bool:
        """Write the commit log's records to the file, in one transaction; delete
        the segments wholly written. `budget`: only the oldest records, until
        they hold this many bytes; True if more are left. Raises StoreFailed
        (the records stay in the log)."""
        with self._writing:
            journal, marks = self._unapplied(budget)
            try:
                self._write(journal, flush)
            except StoreFailed as exc:
                self.failing = exc
                raise
            self._applied(marks)
            self.failing = None
            return any(segment.applied < segment.end for segment in self._log.pending())

    def _unapplied(self, budget: int | None = None,
                   ) -> tuple[Journal, list[tuple[Segment, int, bool]]]:
        """The log's records not yet in the file (the oldest, up to `budget`
        bytes), as one journal; and how far it goes in each segment."""
        journal = Journal()
        marks = []
        records = taken = 0
        for segment in self._log.pending():
            closed = segment.closed  # before `end`: a closed segment's end is its last
            final = segment.end
            end = final
            if budget is not None:  # the oldest records only: read little more than that
                end = min(final, segment.applied + budget - taken + READ_SLACK)
            data = segment.read(end)
            if end < final and not any(True for _ in payloads(data)):
                data = segment.read(final)  # its first record is longer than that
            done = 0  # bytes of `data` taken
            for done, payload in payloads(data):  # noqa: B007 (`done`: how far it went)
                try:
                    decode_into(journal, payload)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise CorruptStore(f"{segment.path.name}: {exc}") from None
                records += 1
                taken += len(payload)
                if records % YIELD_EVERY == 0:
                    time.sleep(0)  # let the loop's thread have the GIL
                if budget is not None and taken >= budget:
                    break
            applied = segment.applied + done
            marks.append((segment, applied, closed and applied == final))
            if budget is not None and taken >= budget:
                break
        return journal, marks

    def _applied(self, marks: list[tuple[Segment, int, bool]]) -> None:
        whole = [segment for segment, _, done in marks if done]  # closed, and in the file
        for segment, end, _ in marks:
            segment.applied = end
        if whole:
            # What came from them is on the disk before they are deleted:
            # one fsync of the write-ahead log per segment (4 MiB of
            # records), not one per transaction (synchronous=FULL).
            self._sync_wal()
            for segment in whole:
                self._log.forget(segment)

    def _sync_wal(self) -> None:
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # none: everything is in the file, which checkpoints sync
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write(self, taken: Journal, flush: bool) -> None:
        """Write `taken` to the file in one transaction.

        Released rows wait for a batch (RELEASE_BATCH, RELEASE_EVERY; all of
        them with `flush`). Raises StoreFailed when nothing was written; then
        the file holds what it held before the call.
        """
        clock = time.monotonic()
        releasing = self._releasing
        if not taken and not (releasing and (flush or clock >= self._release_by)):
            return
        before = len(releasing)
        if taken.released:
            if not releasing:
                self._release_by = clock + RELEASE_EVERY
            releasing += taken.released
        deleting = releasing if releasing and (
            flush or len(releasing) >= RELEASE_BATCH or clock >= self._release_by) else []
        db = self._db
        try:
            db.execute("BEGIN")
            self._statements(taken, deleting)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled it back itself
                db.execute("ROLLBACK")
            # The records stay in the log and bring their releases again;
            # the rows that waited before still wait (a delete is idempotent).
            del releasing[before:]
            raise StoreFailed(exc) from exc
        if deleting:
            releasing.clear()
        if clock >= self._next_log_check:
            self._next_log_check = clock + LOG_CHECK_EVERY
            if self._log_too_long():
                self._rewind_log()

    def _statements(self, taken: Journal, deleting: list[tuple[int, Journaled | None]]) -> None:
        db = self._db
        if taken.created:
            db.executemany("INSERT OR REPLACE INTO streams VALUES (?, ?, ?)",
                           [(s.topic, s.epoch, s.top) for s in taken.created])
        if taken.chats:
            # OR REPLACE: the log's records are applied again after a crash
            # that came between a write and the deletion of its segment.
            db.executemany("INSERT OR REPLACE INTO chats VALUES (?, ?, ?, ?, ?, ?)", taken.chats)
        if taken.keys:
            db.executemany("INSERT OR REPLACE INTO msgids VALUES (?, ?, ?, ?, ?)", taken.keys)
        if deleting:
            db.executemany("DELETE FROM chats WHERE seq BETWEEN ? AND ?",
                           _runs(seq for seq, _ in deleting))
            # A room's top must outlive its last row (the latest top per stream).
            owners = {(s.topic, s.epoch): s for _, s in deleting if s}
            db.executemany("UPDATE streams SET top = ? WHERE topic = ? AND epoch = ?",
                           [(s.top, s.topic, s.epoch) for s in owners.values()])
        if taken.keys_through:
            db.execute("DELETE FROM msgids WHERE seq <= ?", (taken.keys_through,))
        if taken.dropped:
            db.executemany("DELETE FROM streams WHERE topic = ? AND epoch = ?",
                           [(s.topic, s.epoch) for s in taken.dropped])

    def _log_too_long(self) -> bool:
        try:
            return self._wal.stat().st_size > WAL_LIMIT
        except FileNotFoundError:
            return False

    def _rewind_log(self) -> None:
        """Restart the write-ahead log from its beginning.

        Under steady writes the checkpoint thread's passive checkpoints never
        reach the log's end, and only a checkpoint that does lets the log be
        rewound: without this it grows without bound. Done between two of the
        applier's transactions: it waits for what is left to copy (and for a
        checkpoint pass under way); the broker's loop goes on meanwhile.
        """
        try:
            busy = self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        except sqlite3.Error as exc:  # written all the same: tried again at a later look
            log.warning("store log not rewound: %s", exc)
            return
        if not busy:
            self.rewinds += 1

    def writable(self) -> bool:
        """Whether both the log and the file take writes now (after a failed commit,
        or while the applier's writes fail)."""
        try:
            self._log.reserve()
            self.apply()
        except (OSError, StoreFailed, CorruptStore):
            return False
        return True


class _Periodic(threading.Thread, abc.ABC):
    """A store thread that does `step` every `every` seconds until `stop`."""

    def __init__(self, name: str, every: float) -> None:
        super().__init__(name=name, daemon=True)
        self._every = every
        self._stopping = False
        self._wake = threading.Event()
        self._warned = float("-inf")

    def run(self) -> None:
        while True:
            self._wake.wait(self._every)
            self._wake.clear()
            if self._stopping:
                return
            self.step()

    @abc.abstractmethod
    def step(self) -> None:
        """One pass of the thread's work."""

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.join()

    def _warn_now(self) -> bool:
        """At most one warning every WARN_EVERY seconds."""
        if time.monotonic() - self._warned < WARN_EVERY:
            return False
        self._warned = time.monotonic()
        return True


class Applier(_Periodic):
    """Writes the commit log's records to the SQLite file every APPLY_EVERY seconds.

    Its SQLite calls run with the GIL released, and it yields the GIL every
    YIELD_EVERY records it decodes, so the loop's thread is not kept waiting.
    A write that fails is tried again at the next pass; meanwhile the store
    is `failing` and the broker refuses chats.
    """

    def __init__(self, store: Store) -> None:
        super().__init__("store-applier", APPLY_EVERY)
        self._store = store

    def run(self) -> None:
        # A lower priority than the loop's thread (Linux: per thread): on a
        # busy core the loop's turns go first, and this thread takes the rest.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), APPLIER_NICE)
        super().run()

    def step(self) -> None:
        store = self._store
        try:
            while store.apply(budget=APPLY_CHUNK) and not self._stopping:
                pass  # a transaction per chunk: the loop never waits long for the file
        except Exception as exc:  # whatever it is, the broker refuses until it works
            if not isinstance(exc, StoreFailed):
                store.failing = StoreFailed(exc)
            if self._warn_now():
                log.warning("store: the commit log could not be written to %s (tried "
                            "again every %.1f s): %s", store.path, APPLY_EVERY, exc,
                            exc_info=not isinstance(exc, StoreFailed))


class Checkpointer(_Periodic):
    """Copies the write-ahead log into the file every CHECKPOINT_EVERY seconds.

    A passive checkpoint on a connection of its own: the applier's writes go
    on meanwhile, and its fsyncs run here, with the GIL released.
    """

    def __init__(self, path: Path) -> None:
        super().__init__("store-checkpoints", CHECKPOINT_EVERY)
        self._db = _connect(path, check_same_thread=False)

    def step(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if self._warn_now():
                log.warning("store checkpoint failed (the log grows until one works): %s", exc)

    def stop(self) -> None:
        super().stop()
        self._db.close()


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive numbers, as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    first = last = -2
    for seq in sorted(seqs):
        if seq != last + 1:
            if last >= 0:
                runs.append((first, last))
            first = seq
        last = seq
    if last >= 0:
        runs.append((first, last))
    return runs


def _connect(path: Path, timeout: float = 5.0, check_same_thread: bool = True,
             ) -> sqlite3.Connection:
    """A connection through SQLite's `unix-excl` file system layer.

    The file is held exclusively by this process (as the directory's lock
    already says it must be) and the log's index lives in this process's
    memory instead of a shared `-shm` file: a transaction then takes no
    file lock system calls (six per commit otherwise, a quarter of a small
    commit's cost). The loop's and the checkpoint thread's connections,
    both in this process, still share the log.
    """
    uri = f"file:{urllib.parse.quote(str(path))}?vfs=unix-excl"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=check_same_thread)


def _files(path: Path) -> list[Path]:
    """The SQLite file's own files."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def open_store(directory: str, limits: Limits, now: float) -> tuple[Store, Sequencer]:
    """The store in `directory` and the streams it holds.

    A file that cannot be trusted is moved aside (logged), and the broker
    starts with an empty store: every room gets a new epoch, so no member
    is ever served an offset from a lost stream. Another broker holding the
    store, or a directory that cannot be written, ends the start-up.
    """
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"chat-broker: --data-dir {directory}: {exc.strerror}") from None
    path = folder / FILE_NAME
    started = time.monotonic()
    try:
        store = Store(path)
    except StoreLocked:
        raise SystemExit(f"chat-broker: {path} is in use by another broker") from None
    except sqlite3.DatabaseError as exc:
        if _code(exc) not in _BAD_FILE:
            raise SystemExit(f"chat-broker: cannot open {path}: {exc}") from None
        _move_aside(path, exc)
        store = Store(path)
    except CorruptStore as exc:
        _move_aside(path, exc)
        store = Store(path)
    try:
        sequencer = store.load(limits, now)
    except StoreFailed as exc:
        store.close(apply=False)
        raise SystemExit(f"chat-broker: cannot read {path} with its commit log applied: "
                         f"{exc}") from None
    except (sqlite3.DatabaseError, CorruptStore) as exc:
        # Not applied on the way out: the log belongs to the bad store.
        store.close(apply=False)
        if isinstance(exc, sqlite3.DatabaseError) and _code(exc) not in _BAD_FILE:
            raise SystemExit(f"chat-broker: cannot read {path}: {exc}") from None
        _move_aside(path, exc)
        store = Store(path)
        sequencer = store.load(limits, now)
    store.start_checkpoints()
    chats = sum(len(s.history) for s in sequencer.streams())
    log.info(
        "store %s: %d rooms, %d chats of history, %d bytes on disk, read in %.2f s",
        path, len(sequencer), chats, store.size(), time.monotonic() - started,
    )
    return store, sequencer


def _move_aside(path: Path, why: object) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for file in [*_files(path), *(segment for _, segment in found(path.parent))]:
        if file.exists():
            target = file.with_name(f"{file.name}.corrupt-{stamp}")
            os.replace(file, target)
            moved.append(target.name)
    log.error(
        "store %s cannot be trusted (%s): moved aside as %s; every room starts with a new "
        "epoch (members get resync)", path, why, ", ".join(moved) or "nothing",
    )
