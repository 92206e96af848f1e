"""The broker's store on a real SQLite file: what a restart reads back, and its failures."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import broker.commitlog as commitlog
import broker.store as store_module
from broker.presence import PresenceLimits, PresenceOwner
from broker.server import Keeper
from broker.store import (
    FILE_NAME,
    RELEASE_BATCH,
    RELEASE_CHUNK,
    Store,
    StoreFailed,
    open_store,
)
from broker.streams import Limits, Sequencer
from protocol.codec import encode_chat
from protocol.stream import (
    AckNote,
    HistoryQuery,
    keyed_part,
    pack,
    query_part,
    read_ack,
    read_reply,
    read_stamp,
)
from protocol.topics import room_topic

ROOM = room_topic("r")
ORIGIN = b"eEDGE\x00"
LIMITS = Limits(history_size=5, history_ttl=60.0, history_bytes=1 << 20, dedupe_window=120.0)


def chat(text: str) -> bytes:
    return encode_chat("r", text, "id-" + text, "u", 1)


def offsets(seq: Sequencer, topic: bytes = ROOM) -> list[int]:
    stream = seq.stream(topic)
    assert stream is not None
    return [stamp[1] for stamp in map(read_stamp, stream.history) if stamp]


def reopen(store: Store, directory: Path, now: float,
           limits: Limits = LIMITS) -> tuple[Store, Sequencer]:
    store.close()
    return open_store(str(directory), limits, now)


def rows(store: Store, table: str) -> int:
    """Rows in the SQLite file once the commit log is applied to it."""
    store.apply()
    with store._writing:
        count: int = store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return count


def refusing(keeper: Keeper) -> bool:
    return keeper.refusing


def failing(store: Store) -> StoreFailed | None:
    return store.failing


def flush(store: Store, seq: Sequencer) -> None:
    """Commit, and write everything to the file, released rows deleted at once."""
    assert seq.journal is not None
    while store.commit(seq.journal):
        pass
    store.apply(flush=True)


def test_a_reopened_store_has_the_same_epochs_offsets_history_and_msgids(
    tmp_path: Path,
) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 1000.0)
    seq.sequence(ROOM, [chat("a"), pack([chat("b"), chat("c")])], 1000.0)
    seq.sequence(ROOM, [keyed_part(ORIGIN, "k1", chat("d"))], 1001.0)
    seq.sequence(room_topic("other"), [chat("x")], 1001.0)
    assert seq.journal is not None
    store.commit(seq.journal)
    epoch = seq.stream(ROOM).epoch  # type: ignore[union-attr]

    store, seq = reopen(store, tmp_path, 1002.0)
    stream = seq.stream(ROOM)
    assert stream is not None and (stream.epoch, stream.top) == (epoch, 4)
    assert offsets(seq) == [1, 2, 3, 4]
    assert offsets(seq, room_topic("other")) == [1]
    # The msgId window came back: a resend is a duplicate of offset 4.
    out = seq.sequence(ROOM, [keyed_part(ORIGIN, "k1", chat("d"))], 1003.0)
    assert out is not None and out.forward == []
    assert read_ack(out.notes[0][1]) == AckNote("r", "k1", epoch, 4, True)
    # Offsets continue.
    out = seq.sequence(ROOM, [chat("e")], 1003.0)
    assert out is not None and read_stamp(out.forward[0]) == (epoch.encode(), 5)
    store.close()


def test_nothing_uncommitted_comes_back(tmp_path: Path) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    seq.sequence(ROOM, [chat("a")], 0.0)
    assert seq.journal is not None
    store.commit(seq.journal)
    seq.sequence(ROOM, [chat("b")], 0.0)  # sequenced, never committed (a crash here)
    store, seq = reopen(store, tmp_path, 1.0)
    assert offsets(seq) == [1]
    store.close()


def test_trimmed_history_leaves_the_store_and_the_top_outlives_it(tmp_path: Path) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert seq.journal is not None
    for i in range(20):
        seq.sequence(ROOM, [chat(f"m{i}")], float(i))
        store.commit(seq.journal)
    assert rows(store, "chats") == 20  # released rows wait for a batch
    flush(store, seq)
    assert rows(store, "chats") == LIMITS.history_size  # rows of trimmed chats deleted
    seq.subscription(ROOM, True)  # a member is still there: the stream stays
    seq.expire(200.0)  # everything past its age
    flush(store, seq)
    assert rows(store, "chats") == 0
    store, seq = reopen(store, tmp_path, 201.0)
    stream = seq.stream(ROOM)
    assert stream is not None and stream.top == 20 and not stream.history
    out = seq.sequence(ROOM, [chat("next")], 202.0)
    assert out is not None and read_stamp(out.forward[0]) == (stream.epoch_bytes, 21)
    store.close()


def test_a_restart_applies_the_limits_of_the_day(tmp_path: Path) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert seq.journal is not None
    for i in range(5):
        seq.sequence(ROOM, [chat(f"m{i}")], 0.0)
    store.commit(seq.journal)
    smaller = LIMITS._replace(history_size=2)
    store, seq = reopen(store, tmp_path, 1.0, smaller)
    assert offsets(seq) == [4, 5]
    assert seq.journal is not None
    flush(store, seq)
    assert rows(store, "chats") == 2
    # Past the age limit at restart: history gone, epoch and top kept.
    store, seq = reopen(store, tmp_path, 500.0)
    stream = seq.stream(ROOM)
    assert stream is not None and stream.top == 5 and offsets(seq) == []
    store.close()


def test_forgotten_msgids_leave_the_store(tmp_path: Path) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert seq.journal is not None
    for i in range(10):
        seq.sequence(ROOM, [keyed_part(ORIGIN, f"k{i}", chat(f"m{i}"))], float(i))
    store.commit(seq.journal)
    assert rows(store, "msgids") == 10
    seq.subscription(ROOM, True)
    seq.expire(125.5)  # the first six are past the 120 s window
    store.commit(seq.journal)
    assert rows(store, "msgids") == 4
    store, seq = reopen(store, tmp_path, 126.0)
    stream = seq.stream(ROOM)
    assert stream is not None and sorted(stream.dedupe) == ["k6", "k7", "k8", "k9"]
    store.close()


def test_a_forgotten_room_starts_again_with_a_new_epoch_and_none_of_its_old_rows(
    tmp_path: Path,
) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert seq.journal is not None
    seq.sequence(ROOM, [chat("a")], 0.0)
    store.commit(seq.journal)
    old = seq.stream(ROOM).epoch  # type: ignore[union-attr]
    store, seq = reopen(store, tmp_path, 100.0)  # history expired, nobody subscribed
    assert seq.journal is not None
    seq.drop_idle()
    store.commit(seq.journal)
    assert rows(store, "streams") == 0
    seq.sequence(ROOM, [chat("b")], 101.0)
    store.commit(seq.journal)
    # An old row the store did not delete yet (a crash before its release)
    # belongs to the old epoch: it is never served under the new one.
    with store._writing:  # the file is the store's thread's too
        store._db.execute("INSERT INTO chats VALUES (1000, ?, 1, 1, 0, ?)",
                          (ROOM, chat("a")[:-2] + b',"epoch":"%s","offset":1}}' % old.encode()))
    store, seq = reopen(store, tmp_path, 102.0)
    stream = seq.stream(ROOM)
    assert stream is not None and stream.epoch != old
    assert [read_stamp(c) for c in stream.history] == [(stream.epoch_bytes, 1)]
    store.close()


def test_releases_are_written_a_chunk_per_commit(tmp_path: Path) -> None:
    limits = LIMITS._replace(history_size=10_000, history_ttl=10.0, history_bytes=1 << 30)
    store, seq = open_store(str(tmp_path), limits, 0.0)
    assert seq.journal is not None
    seq.subscription(ROOM, True)
    for i in range(RELEASE_CHUNK + 10):
        seq.sequence(ROOM, [chat(f"m{i}")], 0.0)
    store.commit(seq.journal)
    seq.expire(100.0)
    assert store.commit(seq.journal)  # more to release
    assert rows(store, "chats") == 10  # a whole chunk is past a batch: deleted at once
    assert not store.commit(seq.journal)
    assert rows(store, "chats") == 10  # the rest waits for a batch
    flush(store, seq)
    assert rows(store, "chats") == 0
    store.close()


def test_released_rows_are_deleted_in_batches_and_a_crash_before_changes_nothing(
    tmp_path: Path,
) -> None:
    limits = LIMITS._replace(history_size=3, history_bytes=1 << 30)
    store, seq = open_store(str(tmp_path), limits, 0.0)
    assert seq.journal is not None
    seq.subscription(ROOM, True)
    top = limits.history_size + 5
    for i in range(top):  # a chat per commit, as at a low rate
        seq.sequence(ROOM, [chat(f"m{i}")], 1.0)
        store.commit(seq.journal)
    # Five rows released, and waiting for a batch in the file.
    assert rows(store, "chats") == limits.history_size + 5
    # Killed now, the released rows still in the file: the limits apply again.
    store, seq = reopen(store, tmp_path, 2.0, limits)
    assert offsets(seq) == [top - 2, top - 1, top]
    assert seq.stream(ROOM).top == top  # type: ignore[union-attr]
    flush(store, seq)
    assert rows(store, "chats") == limits.history_size
    # RELEASE_BATCH releases are deleted at once, without a flush.
    assert seq.journal is not None
    for i in range(RELEASE_BATCH):
        seq.sequence(ROOM, [chat(f"n{i}")], 2.0)
        store.commit(seq.journal)
    assert rows(store, "chats") == limits.history_size
    store.close()


def test_a_file_of_random_bytes_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).write_bytes(os.urandom(64 * 1024))
    with caplog.at_level(logging.ERROR):
        store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert len(seq) == 0
    assert any("cannot be trusted" in r.getMessage() for r in caplog.records)
    assert len(list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))) == 1
    seq.sequence(ROOM, [chat("a")], 0.0)  # and the new store works
    assert seq.journal is not None
    store.commit(seq.journal)
    store.close()


def test_a_truncated_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert seq.journal is not None
    for i in range(300):
        seq.sequence(room_topic(f"room-{i}"), [chat("x" * 200)], 0.0)
    store.commit(seq.journal)
    store.close()  # the last connection: the log is checkpointed into the file
    path = tmp_path / FILE_NAME
    os.truncate(path, path.stat().st_size // 2)
    with caplog.at_level(logging.ERROR):
        store, seq = open_store(str(tmp_path), LIMITS, 1.0)
    assert len(seq) == 0
    assert any("cannot be trusted" in r.getMessage() for r in caplog.records)
    store.close()


def test_a_second_broker_on_the_same_store_is_refused(tmp_path: Path) -> None:
    store, _ = open_store(str(tmp_path), LIMITS, 0.0)
    with pytest.raises(SystemExit, match="in use by another broker"):
        open_store(str(tmp_path), LIMITS, 0.0)
    store.close()


def _fill(store: Store) -> None:
    """Let the file grow no more: SQLite answers SQLITE_FULL, as on a full disk."""
    with store._writing:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")


def _unfill(store: Store) -> None:
    with store._writing:
        store._db.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_file_leaves_the_turns_in_the_commit_log_until_it_takes_them(
    tmp_path: Path,
) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert seq.journal is not None
    seq.sequence(ROOM, [chat("a")], 0.0)
    store.commit(seq.journal)
    assert rows(store, "chats") == 1
    _fill(store)
    for i in range(200):
        seq.sequence(room_topic(f"room-{i}"), [chat("x" * 500)], 0.0)
    store.commit(seq.journal)  # into the log: it has its space already
    with pytest.raises(StoreFailed) as failed:
        store.apply()
    assert failed.value.full and failing(store) is failed.value
    with store._writing:
        assert store._db.execute("SELECT count(*) FROM chats").fetchone()[0] == 1
    # Killed now: the next start applies the log, when the file has room.
    _unfill(store)
    assert rows(store, "chats") == 201
    assert failing(store) is None
    store.close()


def test_the_keeper_refuses_chats_while_the_file_is_full_and_resumes(tmp_path: Path) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    keeper = Keeper(seq, store, PresenceOwner(PresenceLimits(), 0.0))
    outbox: list[list[bytes]] = []
    turn = [[ROOM, chat("a")]]
    keeper.sequencer.sequence(ROOM, turn[0][1:], 0.0)
    keeper.commit(turn, outbox, 0.0)
    epoch = keeper.sequencer.stream(ROOM).epoch  # type: ignore[union-attr]
    _fill(store)
    big = [[room_topic(f"room-{i}"), chat("x" * 500)] for i in range(200)]
    for message in big:
        keeper.sequencer.sequence(message[0], message[1:], 1.0)
    with store._writing:  # the store's thread finds the file full only after this
        keeper.commit(big, outbox, 1.0)  # in the log: still forwarded
    assert not refusing(keeper)
    with pytest.raises(StoreFailed):
        store.apply()  # as the applier's next pass finds it
    # The next turn is still in the log, and sent; the ones after are refused.
    keeper.sequencer.sequence(ROOM, [chat("b")], 1.5)
    outbox = [[b"forwarded"]]
    keeper.commit([[ROOM, chat("b")]], outbox, 1.5)
    assert refusing(keeper) and outbox == [[b"forwarded"]]
    outbox = []
    keeper.refuse([ROOM, keyed_part(ORIGIN, "k1", chat("c"))], outbox, 2.0)
    assert len(outbox) == 1 and outbox[0][0] == ORIGIN
    note = read_ack(outbox[0][1])
    assert (note.key, note.refused) == ("k1", True)
    assert keeper.refused == 1
    # While refusing, a history query is still answered.
    outbox = []
    query = HistoryQuery(ORIGIN, 7, "r", None, 0, None, 10)
    keeper.refuse([ROOM, query_part(query)], outbox, 2.0)
    assert [m[0] for m in outbox] == [ORIGIN]
    assert read_reply(outbox[0][1]).top == 2
    keeper.retry()
    assert refusing(keeper)  # no space yet
    # Space comes back.
    _unfill(store)
    keeper.retry()
    assert not refusing(keeper)
    out = keeper.sequencer.sequence(ROOM, [chat("d")], 3.0)
    assert out is not None and read_stamp(out.forward[0]) == (epoch.encode(), 3)
    keeper.commit([[ROOM, chat("d")]], [], 3.0)
    assert not refusing(keeper)
    assert rows(store, "chats") == 203
    store.close()


def test_a_log_that_cannot_grow_refuses_the_turn_and_keeps_what_it_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commitlog, "SEGMENT_BYTES", 4096)
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    keeper = Keeper(seq, store, PresenceOwner(PresenceLimits(), 0.0))
    turn = [[ROOM, chat("a")]]
    keeper.sequencer.sequence(ROOM, turn[0][1:], 0.0)
    keeper.commit(turn, [], 0.0)
    epoch = keeper.sequencer.stream(ROOM).epoch  # type: ignore[union-attr]
    # The next segment is bigger than any file may be: the system refuses it.
    monkeypatch.setattr(commitlog, "SEGMENT_BYTES", 1 << 62)
    turn = [[ROOM, keyed_part(ORIGIN, "k1", chat("x" * 5000))]]
    keeper.sequencer.sequence(ROOM, turn[0][1:], 1.0)
    outbox = [[b"would have been forwarded"]]
    keeper.commit(turn, outbox, 1.0)
    assert keeper.refusing
    # Nothing of the turn leaves; the keyed chat's sender is told.
    assert len(outbox) == 1 and outbox[0][0] == ORIGIN
    assert read_ack(outbox[0][1]).refused
    # Read back from the store, the sequencer counts on from the last turn stored.
    assert keeper.sequencer.sequenced == 1
    stream = keeper.sequencer.stream(ROOM)
    assert stream is not None and (stream.epoch, stream.top) == (epoch, 1)
    keeper.retry()
    assert refusing(keeper)
    monkeypatch.setattr(commitlog, "SEGMENT_BYTES", 4096)
    keeper.retry()
    assert not refusing(keeper)
    out = keeper.sequencer.sequence(ROOM, [chat("d")], 3.0)
    assert out is not None and read_stamp(out.forward[0]) == (epoch.encode(), 2)
    keeper.commit([[ROOM, chat("d")]], [], 3.0)
    store, seq = reopen(store, tmp_path, 4.0)
    assert offsets(seq) == [1, 2]
    store.close()


def test_commits_go_to_the_write_ahead_log_and_checkpoints_to_the_file(
    tmp_path: Path,
) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    with store._writing:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert seq.journal is not None
    for i in range(50):
        seq.sequence(room_topic(f"room-{i}"), [chat("x" * 100)], 0.0)
    store.commit(seq.journal)
    wal = tmp_path / f"{FILE_NAME}-wal"
    assert wal.stat().st_size > 0  # committed into the log, not yet into the file
    # The checkpoint thread copies it into the file within a second or so.
    path = tmp_path / FILE_NAME
    before = path.stat().st_size
    deadline = time.monotonic() + 10
    while path.stat().st_size <= before:
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    # The file is the broker's own while it runs: another process is refused.
    other = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys\n"
         "db = sqlite3.connect(sys.argv[1], timeout=0.2)\n"
         "print(db.execute('SELECT count(*) FROM chats').fetchone()[0])", str(path)],
        capture_output=True, text=True, timeout=30)
    assert "database is locked" in other.stderr, other
    store.close()
    reader = sqlite3.connect(path)  # closed, it reads as any SQLite file
    assert reader.execute("SELECT count(*) FROM chats").fetchone()[0] == 50
    reader.close()
    assert not wal.exists()  # the last connection emptied and removed it
    store, seq = open_store(str(tmp_path), LIMITS, 1.0)
    assert len(seq) == 50
    store.close()


def test_the_log_is_rewound_once_past_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 256 * 1024
    monkeypatch.setattr(store_module, "WAL_LIMIT", limit)
    monkeypatch.setattr(store_module, "LOG_CHECK_EVERY", 0.0)
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    assert seq.journal is not None
    wal = tmp_path / f"{FILE_NAME}-wal"
    sent = 0

    def turn() -> None:
        nonlocal sent
        assert seq.journal is not None
        seq.sequence(room_topic(f"room-{sent % 50}"), [chat("x" * 1000)], 0.0)
        store.commit(seq.journal)
        store.apply()  # a write to the file per turn, as the applier's passes
        sent += 1

    largest = 0
    for _ in range(2000):  # a page or more per write: 8 MiB of log without a rewind
        turn()
        largest = max(largest, wal.stat().st_size)
    # Past the limit, the write that saw it rewound the log: it grows past
    # the limit by one write at most (a batch of deletes is the largest).
    assert store.rewinds >= 10, store.rewinds
    assert largest <= limit + 5 * 1024 * 1024, largest
    turn()  # the write after a rewind starts the log again and cuts its file back
    # ... to the limit, plus what that turn wrote: at most a batch of deletes.
    assert wal.stat().st_size <= limit + 1024 * 1024
    store, seq = reopen(store, tmp_path, 1.0)
    top = sum(1 for i in range(sent) if i % 50 == 7)  # room-7's chats
    assert offsets(seq, room_topic("room-7")) == list(range(top - 4, top + 1))  # history 5
    store.close()


def test_the_log_is_written_a_budget_at_a_time_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "APPLY_EVERY", 3600.0)  # only the test writes
    monkeypatch.setattr(commitlog, "SEGMENT_BYTES", 64 * 1024)
    limits = LIMITS._replace(history_size=1000, history_bytes=1 << 30)
    store, seq = open_store(str(tmp_path), limits, 0.0)
    assert seq.journal is not None
    for i in range(300):  # small records over several segments, and two bigger than a read
        size = 200_000 if i in (100, 250) else 100
        seq.sequence(room_topic(f"room-{i % 7}"), [chat(f"{i:03}" + "x" * size)], 0.0)
        store.commit(seq.journal)
    passes, held = 0, []
    while store.apply(budget=1000):
        passes += 1
        with store._writing:
            held.append(store._db.execute("SELECT count(*) FROM chats").fetchone()[0])
    assert passes > 20 and held == sorted(held) and held[0] < 30
    assert rows(store, "chats") == 300
    assert store.unwritten() == 0 and len(store._log.pending()) == 1  # the current segment
    store, seq = reopen(store, tmp_path, 1.0, limits)
    assert offsets(seq, room_topic("room-0")) == list(range(1, 44))
    store.close()
