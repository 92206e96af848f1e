"""The broker's sequencer, without sockets: offsets, stamps, dedupe, history, trimming."""

from __future__ import annotations

import itertools
import json

from broker.streams import Limits, Sequencer
from protocol.codec import encode_chat
from protocol.stream import (
    ACK_MARK,
    REPLY_MARK,
    HistoryQuery,
    keyed_part,
    pack,
    query_part,
    read_ack,
    read_reply,
    read_stamp,
    unpack,
)
from protocol.topics import parse_probe, probe_body, room_topic

ROOM = room_topic("r")
ORIGIN = b"eEDGE\x00"
LIMITS = Limits(history_size=5, history_ttl=60.0, history_bytes=1 << 20, dedupe_window=120.0)


def make(limits: Limits = LIMITS) -> Sequencer:
    epochs = (f"E{n}" for n in itertools.count(1))
    return Sequencer(limits, lambda: next(epochs))


def chat(text: str, msg_id: str | None = None) -> bytes:
    return encode_chat("r", text, "id-" + text, "u", 1, msg_id)


def payload(body: bytes) -> dict[str, object]:
    value: dict[str, object] = json.loads(body)["payload"]
    return value


def test_offsets_are_contiguous_and_stamped_into_the_payload() -> None:
    seq = make()
    out = seq.sequence(ROOM, [chat("a"), chat("b")], now=0.0)
    assert out is not None
    assert [payload(b)["offset"] for b in out.forward] == [1, 2]
    assert all(payload(b)["epoch"] == "E1" for b in out.forward)
    assert payload(out.forward[0])["message"] == "a"
    assert read_stamp(out.forward[1]) == (b"E1", 2)
    out = seq.sequence(ROOM, [chat("c")], now=0.0)
    assert out is not None and read_stamp(out.forward[0]) == (b"E1", 3)


def test_rooms_have_their_own_streams() -> None:
    seq = make()
    seq.sequence(ROOM, [chat("a")], now=0.0)
    out = seq.sequence(room_topic("other"), [chat("x")], now=0.0)
    assert out is not None and read_stamp(out.forward[0]) == (b"E2", 1)
    assert seq.sequence(b"e-not-a-room\x00", [chat("a")], now=0.0) is None


def test_a_probe_is_stamped_with_the_top_at_its_place_in_the_stream() -> None:
    seq = make()
    out = seq.sequence(ROOM, [chat("a"), probe_body("edge", 7), chat("b")], now=0.0)
    assert out is not None
    probe = parse_probe(out.forward[1])
    assert probe is not None and (probe.token, probe.epoch, probe.top) == (7, "E1", 1)


def test_a_msgid_is_delivered_once_and_acknowledged_twice() -> None:
    seq = make()
    first = seq.sequence(ROOM, [keyed_part(ORIGIN, "m1", chat("a", "m1"))], now=0.0)
    again = seq.sequence(ROOM, [keyed_part(ORIGIN, "m1", chat("a", "m1"))], now=100.0)
    assert first is not None and again is not None
    assert len(first.forward) == 1 and again.forward == []
    [(origin, part)] = first.notes
    assert origin == ORIGIN and part[:1] == ACK_MARK
    note = read_ack(part)
    assert (note.room_id, note.key, note.epoch, note.offset, note.duplicate) == (
        "r", "m1", "E1", 1, False
    )
    dup = read_ack(again.notes[0][1])
    assert (dup.offset, dup.duplicate) == (1, True)


def test_the_dedupe_window_ends() -> None:
    seq = make()
    seq.sequence(ROOM, [keyed_part(ORIGIN, "m1", chat("a", "m1"))], now=0.0)
    seq.expire(now=121.0)
    later = seq.sequence(ROOM, [keyed_part(ORIGIN, "m1", chat("a", "m1"))], now=121.0)
    assert later is not None and len(later.forward) == 1


def query(
    seq: Sequencer,
    after: int = 0,
    upto: int | None = None,
    limit: int = 100,
    epoch: str | None = None,
) -> tuple[str, int, bool, list[object]]:
    reply = seq.query(HistoryQuery(ORIGIN, 1, "r", epoch, after, upto, limit))
    return reply.epoch, reply.top, reply.complete, [payload(c)["offset"] for c in reply.chats]


def test_history_is_bounded_by_count_and_says_when_it_is_incomplete() -> None:
    seq = make()
    seq.sequence(ROOM, [chat(str(i)) for i in range(8)], now=0.0)
    assert query(seq, after=3) == ("E1", 8, True, [4, 5, 6, 7, 8])
    assert query(seq, after=2) == ("E1", 8, False, [4, 5, 6, 7, 8])  # 3 was trimmed
    assert query(seq, after=4, upto=6) == ("E1", 8, True, [5, 6])
    assert query(seq, after=0, limit=2) == ("E1", 8, False, [7, 8])  # the last K
    assert query(seq, epoch="old", after=3) == ("E1", 8, False, [])
    assert query(seq, after=8) == ("E1", 8, True, [])


def test_history_expires_by_age_and_the_byte_budget() -> None:
    seq = make()
    seq.sequence(ROOM, [chat("a")], now=0.0)
    seq.sequence(ROOM, [chat("b")], now=30.0)
    seq.expire(now=61.0)
    assert query(seq, after=0) == ("E1", 2, False, [2])
    small = make(LIMITS._replace(history_bytes=800))
    small.sequence(ROOM, [chat(str(i)) for i in range(5)], now=0.0)
    assert small.held_bytes <= 800
    _, top, complete, offsets = query(small, after=0)
    assert top == 5 and not complete and offsets and offsets[-1] == 5


def test_a_query_on_the_rooms_topic_is_answered_in_the_stream() -> None:
    seq = make()
    q = HistoryQuery(ORIGIN, 42, "r", None, 0, None, 10)
    out = seq.sequence(ROOM, [chat("a"), query_part(q), chat("b")], now=0.0)
    assert out is not None
    [(origin, part)] = out.notes
    assert origin == ORIGIN and part[:1] == REPLY_MARK
    reply = read_reply(part)
    assert (reply.request_id, reply.top, reply.complete) == (42, 1, True)  # before "b"


def test_an_idle_room_is_forgotten_and_restarts_with_a_new_epoch() -> None:
    seq = make()
    seq.subscription(ROOM, on=True)
    seq.sequence(ROOM, [chat("a")], now=0.0)
    seq.subscription(ROOM, on=False)
    assert seq.expire(now=61.0)  # history gone, nobody subscribed: dropped
    out = seq.sequence(ROOM, [chat("b")], now=62.0)
    assert out is not None and read_stamp(out.forward[0]) == (b"E2", 1)


def test_garbage_is_counted_not_forwarded() -> None:
    seq = make()
    out = seq.sequence(ROOM, [b"", b"xyz", b"!\xff", b"H\x00"], now=0.0)
    assert out is not None and out.forward == [] and out.notes == []
    assert seq.malformed == 4


def test_a_burst_then_silence_expires_whole() -> None:
    seq = make(LIMITS._replace(history_size=100))
    for i in range(20):
        seq.sequence(ROOM, [chat(str(i))], now=0.5)  # one age window
    seq.expire(now=60.4)
    assert query(seq, after=0)[3][:1] == [1]  # not yet 60 s old
    seq.subscription(ROOM, on=True)  # someone is still there: the stream stays
    seq.expire(now=61.5)
    assert query(seq, after=0) == ("E1", 20, False, [])
    assert seq.held_bytes == 0


def test_packed_chats_are_sequenced_one_by_one_and_forwarded_packed() -> None:
    seq = make()
    out = seq.sequence(ROOM, [pack([chat("a"), chat("b"), chat("c")]), chat("d")], now=0.0)
    assert out is not None and len(out.forward) == 2
    packed = unpack(out.forward[0])
    assert [read_stamp(c) for c in packed] == [(b"E1", 1), (b"E1", 2), (b"E1", 3)]
    assert read_stamp(out.forward[1]) == (b"E1", 4)
    assert all(b"\n" not in c for c in packed)


def test_a_part_that_is_not_a_chat_takes_no_offset() -> None:
    seq = make()
    out = seq.sequence(ROOM, [b"{not json", pack([b"{broken", chat("a")])], now=0.0)
    assert out is not None
    assert [read_stamp(c) for c in unpack(out.forward[0])] == [(b"E1", 1)]
    assert seq.malformed == 2


def test_remembered_msgids_count_in_the_byte_budget_after_history() -> None:
    seq = make(LIMITS._replace(history_bytes=1200))
    for i in range(6):
        seq.sequence(ROOM, [keyed_part(ORIGIN, f"k{i}", chat(str(i), f"k{i}"))], now=0.0)
    assert seq.held_bytes <= 1200
    assert query(seq, after=0)[3] == []  # history went first
    assert seq.shortened_windows > 0 and len(seq.stream(ROOM).dedupe) < 6  # type: ignore[union-attr]
    again = seq.sequence(ROOM, [keyed_part(ORIGIN, "k5", chat("5", "k5"))], now=1.0)
    assert again is not None and again.forward == []  # the newest msgId is still known


def test_a_query_for_chats_all_trimmed_is_answered_incomplete() -> None:
    seq = make()
    seq.sequence(ROOM, [chat(str(i)) for i in range(20)], now=0.0)  # history keeps 16..20
    assert query(seq, after=1, upto=10) == ("E1", 20, False, [])


def test_rooms_emptied_by_the_byte_budget_are_forgotten() -> None:
    seq = make(LIMITS._replace(history_bytes=2000))
    for n in range(50):
        topic = room_topic(f"once-{n}")
        seq.sequence(topic, [chat("x")], now=float(n))
    assert len(seq) < 20  # the rooms whose history went are gone, not kept empty
    assert seq.sequence(room_topic("bad-\xff"), [chat("x")], now=0.0) is not None
    assert seq.sequence(b"r\xff\x00", [chat("x")], now=0.0) is None  # not a room topic
