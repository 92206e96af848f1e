"""The client's pure core: which server frame answers which request, and backoff."""

from __future__ import annotations

import pytest

from chatclient import Backoff, NotInRoom, RateLimited, TooManyRooms
from chatclient.core import Delivered, Done, Request, Stray, Tracker
from chatclient.errors import ERROR_TYPES, ChatError, chat_error
from protocol.codec import (
    PONG_FRAME,
    decode_server_frame,
    encode_chat,
    encode_error,
    encode_joined,
    encode_left,
)
from protocol.errors import ErrorCode
from protocol.messages import ServerFrame

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
    assert tracker.receive(decode_server_frame(encode_joined("r", "e.1"))) == []
    assert tracker.receive(PONG) == [Done(join)]
    assert join.connection_id == "e.1" and tracker.connection_id == "e.1"


def test_a_join_of_a_new_room_completes_when_joined_follows_the_pong() -> None:
    tracker = Tracker()
    join = Request.join("r")
    tracker.send(join)
    assert tracker.receive(PONG) == []
    assert tracker.outstanding() == 1
    assert tracker.receive(decode_server_frame(encode_joined("r", "e.1"))) == [Done(join)]
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
