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

SQLite, from the standard library, in WAL mode: a commit appends to the
write-ahead log and, with `synchronous=NORMAL`, does not wait for the disk;
the commit log does not either. A crashed or killed process loses nothing
committed (the operating system has it); a power cut or kernel crash may
lose the last commits, never the file's integrity. SQLite is built to read
corrupt files without crashing and says so (SQLITE_CORRUPT, SQLITE_NOTADB),
which is what lets the broker move a bad file aside and start again instead
of serving wrong offsets. The layout (see broker.journal) appends to two
logs, so a transaction touches a few pages whatever the number of rooms.
Why SQLite and not LMDB, with figures: docs/benchmarks.md, "The store".

The directory is locked (`streams.lock`, flock) while a broker uses it: a
second broker on the same directory is refused at start.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
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
YIELD_EVERY = 64  # records decoded between the applier's yields of the GIL
LOCK_NAME = "streams.lock"
CHECKPOINT_EVERY = 1.0  # seconds
LOCK_WAIT_MS = 5000  # how long a write waits for the checkpoint thread at most
# Past this the loop rewinds the log (see _rewind_log): a checkpoint of
# what the checkpoint thread has not copied yet, while the loop waits. At a
# chat per turn a commit adds about two pages, so 64 MiB come every 8,000
# chats.
WAL_LIMIT = 64 * 1024 * 1024  # bytes
LOG_CHECK_EVERY = 0.1  # seconds between looks at the log's size (a stat call)
# Once a rewind is due the checkpoint thread passes this often, and the loop
# rewinds within REWIND_FRESH of a pass's end: it then copies only what was
# written since the pass began, not up to a second of writes (20 to 70 ms of
# waiting here, measured alone, when it rewound at any moment).
HURRIED_EVERY = 0.05  # seconds
REWIND_FRESH = 0.01  # seconds
REWIND_WAIT = 2.0  # seconds: past this the loop rewinds without a fresh pass
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
        self._wal = path.with_name(path.name + "-wal")
        self._next_log_check = 0.0
        self._checkpoints: Checkpointer | None = None
        self._rewind_due = 0.0  # when the log was first seen past WAL_LIMIT; 0: not due
        self._next_rewind_try = 0.0  # after a rewind that failed
        self.rewinds = 0  # times the log was rewound
        # Seconds from the end of the checkpoint thread's last pass, per recent rewind.
        self.rewind_lags: collections.deque[float] = collections.deque(maxlen=100)
        # Released chat rows not yet deleted, and when the oldest must be.
        self._releasing: list[tuple[int, Journaled | None]] = []
        self._release_by = 0.0
        db = self._db
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise CorruptStore(f"journal mode {mode!r} instead of WAL")
            db.execute("PRAGMA synchronous=NORMAL")
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
        if self._checkpoints is None:
            self._checkpoints = Checkpointer(self.path)
            self._checkpoints.start()
        if self._applier is None:
            self._applier = Applier(self)
            self._applier.start()

    def close(self) -> None:
        """Apply the whole commit log to the file and close it (what fails stays in the log)."""
        if self._applier is not None:
            self._applier.stop()
        self._log.close()
        with contextlib.suppress(StoreFailed):  # the next start applies it
            self.apply(flush=True)
        if self._checkpoints is not None:
            self._checkpoints.stop()
        self._db.close()  # the last connection: SQLite checkpoints the log into the file
        self._lock.close()

    def size(self) -> int:
        """Bytes on disk, write-ahead log and commit log included."""
        return (sum(p.stat().st_size for p in _files(self.path) if p.exists())
                + self._log.bytes_on_disk())

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
            journal, marks = self._unapplied()
            try:
                self._write(journal, flush=True)
            except StoreFailed:
                self._db.execute("BEGIN")
                try:
                    self._statements(journal, deleting=[])
                    return self._read(limits, now, make_epoch)
                finally:
                    self._db.execute("ROLLBACK")
            self._applied(marks)
            self.failing = None
            return self._read(limits, now, make_epoch)

    def _read(self, limits: Limits, now: float, make_epoch: Callable[[], str]) -> Sequencer:
        db = self._db
        next_chat = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM chats").fetchone()[0]
        next_key = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM msgids").fetchone()[0]
        journal = Journal(next_chat, next_key)
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
        try:
            self._log.append(encode(taken))
        except OSError as exc:
            raise StoreFailed(exc) from exc
        return bool(journal.released)

    def apply(self, flush: bool = False) -> None:
        """Write the commit log's records to the file, in one transaction; delete
        the segments wholly written. Raises StoreFailed (the records stay in the log)."""
        with self._writing:
            journal, marks = self._unapplied()
            try:
                self._write(journal, flush)
            except StoreFailed as exc:
                self.failing = exc
                raise
            self._applied(marks)
            self.failing = None

    def _unapplied(self) -> tuple[Journal, list[tuple[Segment, int, bool]]]:
        """The log's records not yet in the file, as one journal; and how far each segment goes."""
        journal = Journal()
        marks = []
        records = 0
        for segment in self._log.pending():
            closed = segment.closed  # before `end`: a closed segment's end is its last
            end = segment.end
            if end > segment.applied:
                data = segment.read(end)
                for _, payload in payloads(data):
                    try:
                        decode_into(journal, payload)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        raise CorruptStore(f"{segment.path.name}: {exc}") from None
                    records += 1
                    if records % YIELD_EVERY == 0:
                        time.sleep(0)  # let the loop's thread have the GIL
            marks.append((segment, end, closed))
        return journal, marks

    def _applied(self, marks: list[tuple[Segment, int, bool]]) -> None:
        for segment, end, closed in marks:
            segment.applied = end
            if closed:
                self._log.forget(segment)

    def _write(self, taken: Journal, flush: bool) -> None:
        """Write `taken` to the file in one transaction.

        Released rows wait for a batch (RELEASE_BATCH, RELEASE_EVERY; all of
        them with `flush`). Raises StoreFailed when nothing was written; then
        the file holds what it held before the call, and the rows waiting to
        be deleted are forgotten (reading the store back releases them
        again).
        """
        clock = time.monotonic()
        releasing = self._releasing
        if not taken and not (releasing and (flush or clock >= self._release_by)):
            return
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
            releasing.clear()
            raise StoreFailed(exc) from exc
        if deleting:
            releasing.clear()
        if not self._rewind_due and clock >= self._next_log_check:
            self._next_log_check = clock + LOG_CHECK_EVERY
            if self._log_too_long():
                self._rewind_due = clock
                if self._checkpoints is not None:
                    self._checkpoints.hurry()
        if self._rewind_due:
            self._rewind_log(clock)

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

    def _rewind_log(self, clock: float) -> None:
        """Restart the write-ahead log from its beginning, right after a checkpoint pass.

        Under steady writes the checkpoint thread's passive checkpoints never
        reach the log's end, and only a checkpoint that does lets the log be
        rewound: without this it grows without bound. Done here, between
        turns, where no write of ours is in progress, and only just after
        the thread's last pass (or once REWIND_WAIT has gone by), so that
        what is left to copy is what was written since that pass began. It does not
        wait: if the thread holds the checkpoint, the next turn tries again.
        """
        checkpoints = self._checkpoints
        since_pass = clock - checkpoints.finished if checkpoints is not None else 0.0
        if since_pass > REWIND_FRESH and clock - self._rewind_due < REWIND_WAIT:
            return
        if clock < self._next_rewind_try:
            return
        db = self._db
        try:
            db.execute("PRAGMA busy_timeout = 0")
            try:
                busy = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_MS)}")
        except sqlite3.Error as exc:  # committed all the same: tried again a little later
            self._next_rewind_try = clock + LOG_CHECK_EVERY
            log.warning("store log not rewound: %s", exc)
            return
        if busy:
            return  # the thread is checkpointing: the next turn tries again
        self._rewind_due = 0.0
        self.rewinds += 1
        self.rewind_lags.append(since_pass)
        if checkpoints is not None:
            checkpoints.calm()

    def writable(self) -> bool:
        """Whether both the log and the file take writes now (after a failed commit,
        or while the applier's writes fail)."""
        try:
            self._log.reserve()
            self.apply()
        except (OSError, StoreFailed):
            return False
        return True


class Applier(threading.Thread):
    """Writes the commit log's records to the SQLite file every APPLY_EVERY seconds.

    Its SQLite calls run with the GIL released, and it yields the GIL every
    YIELD_EVERY records it decodes, so the loop's thread is not kept waiting.
    A write that fails is tried again at the next pass; meanwhile the store
    is `failing` and the broker refuses chats.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(name="store-applier", daemon=True)
        self._store = store
        self._stopping = False
        self._wake = threading.Event()
        self._warned = float("-inf")

    def run(self) -> None:
        store = self._store
        while True:
            self._wake.wait(APPLY_EVERY)
            self._wake.clear()
            if self._stopping:
                return
            try:
                store.apply()
            except (StoreFailed, CorruptStore) as exc:
                if isinstance(exc, CorruptStore):
                    store.failing = StoreFailed(exc)
                if time.monotonic() - self._warned >= WARN_EVERY:
                    self._warned = time.monotonic()
                    log.warning("store: the commit log could not be written to %s (tried "
                                "again every %.1f s): %s", store.path, APPLY_EVERY, exc)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.join()


class Checkpointer(threading.Thread):
    """Copies the write-ahead log into the file every CHECKPOINT_EVERY seconds.

    A passive checkpoint on a connection of its own: the loop's commits go on
    meanwhile, and its fsyncs run here, with the GIL released. While a
    rewind of the log is due (`hurry`) it passes every HURRIED_EVERY, and
    `finished` tells the loop when the last pass ended.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(name="store-checkpoints", daemon=True)
        self._path = path
        self._db = _connect(path, check_same_thread=False)
        self._stopping = False
        self._hurried = False
        self._wake = threading.Event()
        self.finished = float("-inf")  # time.monotonic() at the end of the last pass
        self._warned = float("-inf")

    def run(self) -> None:
        while True:
            self._wake.wait(HURRIED_EVERY if self._hurried else CHECKPOINT_EVERY)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                if time.monotonic() - self._warned >= WARN_EVERY:
                    self._warned = time.monotonic()
                    log.warning("store checkpoint failed (the log grows until one works): %s",
                                exc)
            self.finished = time.monotonic()

    def hurry(self) -> None:
        """A rewind is due: pass now, and often until `calm`."""
        self._hurried = True
        self._wake.set()

    def calm(self) -> None:
        self._hurried = False

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.join()
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
    except (sqlite3.DatabaseError, CorruptStore) as exc:
        if isinstance(exc, sqlite3.DatabaseError) and _code(exc) not in _BAD_FILE:
            store.close()
            raise SystemExit(f"chat-broker: cannot read {path}: {exc}") from None
        store.close()
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
