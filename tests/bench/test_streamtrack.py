"""The bookkeeping of `chat-bench recovery` and `chat-bench broker`, without sockets."""

from __future__ import annotations

from bench.brokerload import Continuity, room_messages
from bench.recovery import failures
from bench.streamtrack import Track, percentile
from protocol.stream import pack, read_stamp, stamp, unpack
from protocol.topics import room_of_topic


def test_a_member_that_sees_every_offset_once_missed_and_duplicated_nothing() -> None:
    t = Track()
    t.joined("E", 3, None, at=0.0)
    for offset in (4, 5, 6):
        t.chat("E", offset, at=1.0)
    assert (t.missed(6), t.duplicated(), t.foreign) == (0, 0, 0)


def test_missed_counts_the_holes_from_the_first_joins_top_to_the_rooms_last() -> None:
    t = Track()
    t.joined("E", 0, None, at=0.0)
    for offset in (1, 2, 5):
        t.chat("E", offset, at=1.0)
    assert t.missed(6) == 3  # 3, 4 and 6
    assert t.missed(2) == 0


def test_second_copies_count_as_duplicates_and_chats_of_another_epoch_apart() -> None:
    t = Track()
    t.joined("E", 0, None, at=0.0)
    for offset in (1, 2, 2, 3, 3, 3):
        t.chat("E", offset, at=1.0)
    t.chat("F", 4, at=1.0)
    assert t.duplicated() == 3
    assert t.foreign == 1
    assert t.last == 3


def test_a_reconnect_rejoins_since_the_last_offset_and_times_the_first_recovered_chat() -> None:
    t = Track()
    t.joined("E", 10, None, at=0.0)
    t.chat("E", 11, at=0.5)
    t.chat("E", 12, at=0.6)
    assert t.reconnecting(at=2.0, abrupt=True) == ("E", 12)
    t.joined("E", 20, True, at=2.01)
    t.chat("E", 13, at=2.025)  # the first replayed chat
    t.chat("E", 14, at=2.03)
    [rec] = t.reconnects
    assert rec.recovered is True and rec.abrupt
    assert rec.missed_while_away == 8
    assert rec.recover_s is not None and abs(rec.recover_s - 0.025) < 1e-9
    assert t.not_recovered() == 0


def test_a_chat_before_the_rejoin_is_answered_does_not_count_as_recovered() -> None:
    t = Track()
    t.joined("E", 0, None, at=0.0)
    t.reconnecting(at=1.0, abrupt=False)
    assert t.reconnects[0].first_at is None
    t.joined("E", 0, False, at=1.1)
    assert t.not_recovered() == 1
    assert t.reconnects[0].recover_s is None


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_failures_name_missed_duplicated_unrecovered_and_stalled_runs() -> None:
    good = {"missed": 0, "duplicated": 0, "not_recovered": 0, "caught_up": True,
            "reconnects": 4}
    assert failures(good) == []
    bad = {**good, "missed": 2, "duplicated": 1, "caught_up": False}
    assert failures(bad) == ["missed = 2", "duplicated = 1",
                             "some members never reached the room's last offset"]


def test_broker_load_messages_are_one_topic_then_batch_chats_per_room() -> None:
    messages = room_messages(3, 10, 16)
    assert len(messages) == 3
    assert [room_of_topic(m[0]) for m in messages] == ["bench-0", "bench-1", "bench-2"]
    assert all(len(m) == 11 and all(c.endswith(b"}}") for c in m[1:]) for m in messages)
    [packed] = room_messages(1, 10, 16, "packed")
    assert len(packed) == 2 and unpack(packed[1]) == messages[0][1:]


def test_continuity_counts_messages_whose_offsets_do_not_follow_on() -> None:
    check = Continuity()
    topic = b"rx\x00"
    chat = b'{"type":"chat","payload":{"message":"m"}}'
    check.message([topic, stamp(chat, b"E", 1), stamp(chat, b"E", 2)])
    check.message([topic, stamp(chat, b"E", 3)])
    check.message([topic, stamp(chat, b"E", 7)])  # 4..6 skipped
    check.message([topic, chat])  # not stamped
    check.message([topic, pack([stamp(chat, b"E", 8), stamp(chat, b"E", 9)])])  # packed
    assert check.chats == 7
    assert check.breaks == 2
    assert read_stamp(stamp(chat, b"E", 3)) == (b"E", 3)
