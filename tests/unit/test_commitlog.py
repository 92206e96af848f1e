"""The store's commit log: records, segments, and what a killed broker leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import broker.commitlog as commitlog
from broker.commitlog import CommitLog, Saved, decode_into, encode, found, payloads
from broker.journal import ChatRow, Journal, KeyRow
from broker.store import open_store
from broker.streams import Limits
from protocol.stream import read_stamp
from protocol.topics import room_topic

LIMITS = Limits(history_size=5, history_ttl=60.0, history_bytes=1 << 20, dedupe_window=120.0)


def journal_of_every_kind() -> Journal:
    journal = Journal()
    journal.created.append(Saved(b"r\x00a", "E1", 0))
    journal.dropped.append(Saved(b"r\x00b", "E0", 7))
    journal.chats.append(ChatRow(1, b"r\x00a", 1, 2, 1000.5, b'{"a"}\x1e{"b"}'))
    journal.keys.append(KeyRow(1, b"r\x00a", "k1", 2, 1000.5))
    journal.released += [(3, Saved(b"r\x00a", "E1", 2)), (4, None)]
    journal.keys_through = 9
    return journal


def test_a_record_holds_every_kind_of_change() -> None:
    original = journal_of_every_kind()
    record = encode(original)
    [(end, payload)] = list(payloads(record))
    assert end == len(record)
    back = Journal()
    decode_into(back, payload)
    assert back.created == original.created and back.dropped == original.dropped
    assert back.chats == original.chats and back.keys == original.keys
    assert back.released == original.released and back.keys_through == 9
    # Records add up, in order.
    decode_into(back, payload)
    assert back.chats == original.chats * 2 and back.keys_through == 9


@pytest.mark.parametrize("cut", ["mid-payload", "mid-header", "bad checksum", "zeros"])
def test_reading_stops_at_the_first_record_that_is_not_whole(cut: str) -> None:
    first, second = encode(journal_of_every_kind()), encode(Journal())
    if cut == "mid-payload":
        tail = second[:-3]
    elif cut == "mid-header":
        tail = second[:5]
    elif cut == "bad checksum":
        tail = second[:-1] + bytes([second[-1] ^ 1])
    else:
        tail = bytes(64)
    data = first + tail + first  # nothing after a bad record counts
    assert [end for end, _ in payloads(data)] == [len(first)]
    assert commitlog.sound_end(data) == len(first)


def test_segments_are_reserved_rotated_and_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commitlog, "SEGMENT_BYTES", 4096)
    log = CommitLog(tmp_path)
    small = encode(journal_of_every_kind())
    for _ in range(4096 // len(small) + 1):  # one more than a segment holds
        log.append(small)
    big_journal = Journal()
    big_journal.chats.append(ChatRow(2, b"r\x00a", 3, 3, 1.0, b"x" * 10_000))
    big = encode(big_journal)
    log.append(big)  # bigger than a segment: one of its own
    segments = log.pending()
    assert [s.number for s in segments] == [1, 2, 3]
    assert [s.path.stat().st_size for s in segments] == [4096, 4096, len(big)]
    assert [s.closed for s in segments] == [True, True, False]
    log.close()
    # A new process reads where each segment's records end, and writes anew.
    again = CommitLog(tmp_path)
    ends = [s.end for s in again.pending()]
    assert ends == [s.end for s in segments] and ends[2] == len(big)
    again.append(small)
    assert [number for number, _ in found(tmp_path)] == [1, 2, 3, 4]
    again.close()


def test_a_segment_that_cannot_be_reserved_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commitlog, "SEGMENT_BYTES", 1 << 62)  # more than any file may be
    log = CommitLog(tmp_path)
    with pytest.raises(OSError):
        log.append(encode(journal_of_every_kind()))
    assert log.pending() == [] and found(tmp_path) == []


# A broker's store, committing turns into a log of small segments, and
# then killed with SIGKILL; with `apply`, it first writes them all to the
# file at turn 25 (released rows deleted): the current segment is not
# deleted yet, so the next start applies its records again.
_KILLED = r"""
import json, os, signal, sys
import broker.commitlog as commitlog
import broker.store as store_module
from broker.store import open_store
from broker.streams import Limits
from protocol.codec import encode_chat
from protocol.stream import keyed_part
from protocol.topics import room_topic

store_module.APPLY_EVERY = 3600.0  # the applier never runs by itself
commitlog.SEGMENT_BYTES = 4096
directory, apply = sys.argv[1], sys.argv[2] == "apply"
limits = Limits(history_size=5, history_ttl=10.0, history_bytes=1 << 20, dedupe_window=120.0)
store, seq = open_store(directory, limits, 0.0)
chat = lambda text: encode_chat("r", text, "id-" + text, "u", 1)
for i in range(30):
    now = 1.0 + i
    for room in ("a", "b"):
        part = chat(f"{room}{i}")
        if i % 3 == 0:
            part = keyed_part(b"eEDGE\x00", f"k{i}", part)
        seq.sequence(room_topic(room), [part], now)
    if i == 0:
        seq.sequence(room_topic("c"), [chat("c0")], now)
    if i == 20:  # room c's chat is past its age, and nobody is in it: forgotten
        seq.expire(now)
        seq.drop_idle()
    while store.commit(seq.journal):
        pass
    if apply and i == 25:
        store.apply(flush=True)
streams = {s.room_id: [s.epoch, s.top] for s in seq.streams()}
print(json.dumps([streams, len(commitlog.found(store._log.directory))]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("applied", [False, True], ids=["in the log only", "applied, then killed"])
def test_what_a_killed_broker_committed_comes_back(tmp_path: Path, applied: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmp_path), "apply" if applied else "no"],
        capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    before, left = json.loads(done.stdout)
    assert "c" not in before
    segments = found(tmp_path)
    # Several segments; with `apply`, those written to the file were deleted.
    assert len(segments) == left and (left <= 2 if applied else left > 2), left
    # A copy cut short by the kill: the torn record is not read.
    with open(segments[-1][1], "r+b") as file:
        file.seek(commitlog.sound_end(file.read()))
        file.write(encode(journal_of_every_kind())[:20])
    store, seq = open_store(str(tmp_path), LIMITS, 31.0)
    after = {s.room_id: [s.epoch, s.top] for s in seq.streams()}
    assert after == before and before["a"][1] == 30
    for room in ("a", "b"):
        stream = seq.stream(room_topic(room))
        assert stream is not None
        assert [stamp[1] for stamp in map(read_stamp, stream.history) if stamp] == list(
            range(26, 31))
        assert sorted(stream.dedupe) == sorted(f"k{i}" for i in range(0, 30, 3))
    assert found(tmp_path) == []  # applied at start, and deleted
    store.close()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(commitlog.PREFIX)]
