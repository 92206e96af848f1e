"""The client's pure core: which server frame answers which request, where each room's
stream stands, and backoff."""

from __future__ import annotations

from typing import Any

import pytest

from chatclient import Backoff, NotInRoom, RateLimited, TooManyRooms, Unavailable
from chatclient.core import (
    Delivered,
    Done,
    Event,
    Joined,
    Noted,
    Request,
    Resynced,
    Stray,
    Tracker,
)
from chatclient.errors import ERROR_TYPES, ChatError, chat_error
from protocol.codec import (
    PONG_FRAME,
    decode_server_frame,
    encode_ack,
    encode_chat,
    encode_error,
    encode_joined,
    encode_left,
    encode_resync,
)
from protocol.errors import ErrorCode
from protocol.messages import ServerFrame
from protocol.stream import stamp

PONG = decode_server_frame(PONG_FRAME)


def error(code: ErrorCode) -> ServerFrame:
    return decode_server_frame(encode_error(code, "refused"))


def test_every_request_is_followed_by_a_ping() -> None:
    tracker = Tracker()
    frames = tracker.send(Request.chat("r", "hi"))
    assert frames == [
        b'{"type":"chat","payload":{"message":"hi","roomId":"r"}}',
        b'{"type":"ping"}',
    ]
    assert tracker.send(Request.ping()) == [b'{"type":"ping"}']


def test_a_chat_is_accepted_at_its_pong() -> None:
    tracker = Tracker()
    request = Request.chat("r", "hi")
    tracker.send(request)
    assert tracker.receive(PONG) == [Done(request)]
    assert request.error is None and request.done


def test_an_error_answers_the_oldest_unanswered_request() -> None:
    tracker = Tracker()
    first, second = Request.chat("a", "1"), Request.chat("b", "2")
    tracker.send(first)
    tracker.send(second)
    [done] = tracker.receive(error(ErrorCode.NOT_IN_ROOM))
    assert isinstance(done, Done) and done.request is first and isinstance(first.error, NotInRoom)
    assert tracker.receive(PONG) == []  # first's pong: already reported
    assert tracker.receive(PONG) == [Done(second)]
    assert second.error is None


def test_an_error_with_nothing_outstanding_is_stray() -> None:
    tracker = Tracker()
    [event] = tracker.receive(error(ErrorCode.BAD_JSON))
    assert isinstance(event, Stray) and event.error.code == "bad_json"


def test_a_join_answered_at_once_completes_at_its_pong() -> None:
    tracker = Tracker()
    join = Request.join("r")
    tracker.send(join)
    assert tracker.receive(decode_server_frame(encode_joined("r", "e.1"))) == [
        Noted(Joined("r", "e.1", None, None))
    ]
    assert tracker.receive(PONG) == [Done(join)]
    assert join.connection_id == "e.1" and tracker.connection_id == "e.1"


def test_a_join_of_a_new_room_completes_when_joined_follows_the_pong() -> None:
    tracker = Tracker()
    join = Request.join("r")
    tracker.send(join)
    assert tracker.receive(PONG) == []
    assert tracker.outstanding() == 1
    assert tracker.receive(decode_server_frame(encode_joined("r", "e.1"))) == [
        Noted(Joined("r", "e.1", None, None)), Done(join)
    ]
    assert tracker.outstanding() == 0


def test_a_refused_join_fails_before_its_pong() -> None:
    tracker = Tracker()
    join = Request.join("r")
    tracker.send(join)
    assert tracker.receive(error(ErrorCode.TOO_MANY_ROOMS)) == [Done(join)]
    assert isinstance(join.error, TooManyRooms)
    assert tracker.receive(PONG) == []


def test_chats_and_leaves_pass_through() -> None:
    tracker = Tracker()
    leave = Request.leave("r")
    tracker.send(leave)
    chat = decode_server_frame(encode_chat("r", "hi", "e-1", "e.2", 5))
    [delivered] = tracker.receive(chat)
    assert isinstance(delivered, Delivered) and delivered.message.message == "hi"
    assert tracker.receive(decode_server_frame(encode_left("r"))) == []
    assert tracker.receive(PONG) == [Done(leave)]


def test_lost_returns_everything_outstanding() -> None:
    tracker = Tracker()
    a, b = Request.join("a"), Request.chat("a", "x")
    tracker.send(a)
    tracker.send(b)
    tracker.receive(PONG)  # a now waits for `joined`
    assert tracker.lost() == [b, a]
    assert tracker.outstanding() == 0


@pytest.mark.parametrize("code", [c.value for c in ErrorCode])
def test_every_protocol_error_code_has_its_own_type(code: str) -> None:
    exc = chat_error(code, "because")
    assert type(exc) is ERROR_TYPES[code]
    assert exc.code == code and exc.message == "because"


def test_an_unknown_code_is_still_a_chat_error() -> None:
    exc = chat_error("brand_new", "later")
    assert type(exc) is ChatError and exc.code == "brand_new"
    assert isinstance(chat_error("rate_limited", "slow"), RateLimited)


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    top = Backoff(base=0.1, cap=1.0, rng=lambda: 1.0)
    assert [round(top.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    top.reset()
    assert top.next() == pytest.approx(0.1)
    bottom = Backoff(rng=lambda: 0.0)
    assert bottom.next() == 0.0
    many = Backoff(base=0.1, cap=5.0, rng=lambda: 1.0)
    for _ in range(5000):
        many.next()
    assert many.next() == 5.0


# Protocol v2: positions in each room's stream, acks by msgId.


def chat(room_id: str, offset: int, epoch: str = "E1", text: str = "") -> ServerFrame:
    return decode_server_frame(
        stamp(encode_chat(room_id, text or f"m{offset}", f"id-{offset}", "e.2", 5), epoch.encode(),
              offset)
    )


def joined(room_id: str, epoch: str, top: int, recovered: bool | None = None) -> ServerFrame:
    return decode_server_frame(encode_joined(room_id, "e.1", epoch, top, recovered))


def offsets(events: list[Event]) -> list[int | None]:
    return [e.message.offset for e in events if isinstance(e, Delivered)]


def join_live(tracker: Tracker, room_id: str, epoch: str, top: int, **options: Any) -> Request:
    join = Request.join(room_id, **options)
    tracker.send(join)
    tracker.receive(joined(room_id, epoch, top, None if "since" not in options else True))
    tracker.receive(PONG)
    assert join.done
    return join


def test_the_position_follows_joined_and_every_chat() -> None:
    tracker = Tracker()
    assert tracker.position("r") is None
    join_live(tracker, "r", "E1", 7)
    assert tracker.position("r") == ("E1", 7)
    assert offsets(tracker.receive(chat("r", 8))) == [8]
    assert tracker.position("r") == ("E1", 8)
    tracker.lost()  # the position outlives the connection
    assert tracker.position("r") == ("E1", 8)
    tracker.forget("r")
    assert tracker.position("r") is None
    # The last chats of a room just left still arrive, and start no position.
    assert offsets(tracker.receive(chat("r", 9))) == [9]
    assert tracker.position("r") is None


def test_a_rejoin_asks_since_and_a_recovered_replay_is_delivered() -> None:
    tracker = Tracker()
    join_live(tracker, "r", "E1", 3)
    tracker.receive(chat("r", 4))
    tracker.lost()
    rejoin = Request.join("r", since=tracker.position("r"))
    assert rejoin.frame == (
        b'{"type":"join","payload":{"roomId":"r","since":{"epoch":"E1","offset":4}}}'
    )
    tracker.send(rejoin)
    events = tracker.receive(joined("r", "E1", 6, recovered=True))
    assert events[0] == Noted(Joined("r", "e.1", "E1", 6, True))
    assert tracker.position("r") == ("E1", 4)  # the replay still has to come
    replay = [e for n in (5, 6, 7) for e in tracker.receive(chat("r", n))]
    assert offsets(replay) == [5, 6, 7]
    assert tracker.position("r") == ("E1", 7)


def test_a_chat_seen_already_is_dropped() -> None:
    tracker = Tracker()
    join_live(tracker, "r", "E1", 0)
    got = [e for n in (1, 2, 2, 1, 3) for e in tracker.receive(chat("r", n))]
    assert offsets(got) == [1, 2, 3]
    assert tracker.duplicates == 2
    # Another epoch is another stream: its offsets start again.
    assert offsets(tracker.receive(chat("r", 1, epoch="E2"))) == [1]


def test_history_on_join_is_delivered_and_a_failed_recovery_never_repeats_a_chat() -> None:
    tracker = Tracker()
    join_live(tracker, "r", "E1", 10, history=3)
    assert tracker.position("r") == ("E1", 7)
    assert offsets([e for n in (8, 9, 10) for e in tracker.receive(chat("r", n))]) == [8, 9, 10]
    tracker.lost()
    # History was trimmed: recovery fails in the same epoch and the last 3 come again.
    rejoin = Request.join("r", history=3, since=tracker.position("r"))
    tracker.send(rejoin)
    [noted, *_] = tracker.receive(joined("r", "E1", 40, recovered=False))
    assert noted == Noted(Joined("r", "e.1", "E1", 40, False))
    assert tracker.position("r") == ("E1", 37)
    # A new epoch: the earlier position means nothing there.
    tracker.lost()
    tracker.send(Request.join("r", since=tracker.position("r")))
    tracker.receive(joined("r", "E2", 2, recovered=False))
    assert tracker.position("r") == ("E2", 2)


def test_a_resync_moves_the_position_and_is_reported() -> None:
    tracker = Tracker()
    join_live(tracker, "r", "E1", 5)
    assert tracker.receive(decode_server_frame(encode_resync("r", "E2", 0))) == [
        Noted(Resynced("r", "E2", 0))
    ]
    assert tracker.position("r") == ("E2", 0)
    assert offsets(tracker.receive(chat("r", 1, epoch="E2"))) == [1]


def test_a_chat_with_a_msgid_completes_at_its_ack_in_either_order() -> None:
    tracker = Tracker()
    send = Request.chat("r", "hi", "m-1")
    assert tracker.send(send)[0] == (
        b'{"type":"chat","payload":{"message":"hi","roomId":"r","msgId":"m-1"}}'
    )
    assert tracker.receive(PONG) == []  # accepted by the edge, not yet sequenced
    assert tracker.outstanding() == 1
    ack = decode_server_frame(encode_ack("r", "m-1", "E1", 4))
    assert tracker.receive(ack) == [Done(send)]
    assert send.ack is not None and (send.ack.offset, send.ack.duplicate) == (4, False)
    assert tracker.outstanding() == 0
    # An ack before the pong: the pong then answers nothing.
    early = Request.chat("r", "again", "m-2")
    tracker.send(early)
    dup = decode_server_frame(encode_ack("r", "m-2", "E1", 4, duplicate=True))
    assert tracker.receive(dup) == [Done(early)]
    assert early.ack is not None and early.ack.duplicate
    assert tracker.receive(PONG) == []
    assert tracker.receive(ack) == []  # an ack nobody waits for


def test_an_error_naming_a_msgid_fails_that_send_whatever_the_order() -> None:
    tracker = Tracker()
    first, second = Request.chat("r", "1", "m-1"), Request.chat("r", "2", "m-2")
    tracker.send(first)
    tracker.send(second)
    assert tracker.receive(PONG) == [] and tracker.receive(PONG) == []
    late = decode_server_frame(encode_error(ErrorCode.UNAVAILABLE, "no broker", "m-2"))
    assert tracker.receive(late) == [Done(second)]
    assert isinstance(second.error, Unavailable) and second.error.msg_id == "m-2"
    assert tracker.receive(late) == []  # about a send no longer waited for: not stray
    assert first.error is None and tracker.outstanding() == 1
    assert tracker.lost() == [first]


def test_a_refusal_before_the_pong_is_matched_by_msgid_too() -> None:
    tracker = Tracker()
    plain, tagged = Request.ping(), Request.chat("r", "x", "m-9")
    tracker.send(plain)
    tracker.send(tagged)
    refused = decode_server_frame(encode_error(ErrorCode.NOT_IN_ROOM, "join first", "m-9"))
    assert tracker.receive(refused) == [Done(tagged)]
    assert isinstance(tagged.error, NotInRoom)
    assert tracker.receive(PONG) == [Done(plain)]
    assert tracker.receive(PONG) == []


def test_a_join_repeated_during_a_replay_leaves_the_position_alone() -> None:
    tracker = Tracker()
    join_live(tracker, "r", "E1", 10, history=3)
    again = Request.join("r")
    tracker.send(again)
    [noted] = tracker.receive(joined("r", "E1", 10))  # answered before the replay
    assert noted == Noted(Joined("r", "e.1", "E1", 10))
    assert tracker.position("r") == ("E1", 7)
    assert offsets([e for n in (8, 9, 10, 11) for e in tracker.receive(chat("r", n))]) == [
        8, 9, 10, 11
    ]
    assert tracker.receive(PONG) == [Done(again)]
