"""Every frame type round-trips; every error code and boundary of the decoder."""

from __future__ import annotations

import json

import msgspec
import pytest

from edge.api import PostedMessage
from edge.rooms import RoomRegistry
from edge.session import Client, FrameHandler, Reply
from protocol import (
    ChatMessage,
    ChatRequest,
    ErrorCode,
    Joined,
    JoinRequest,
    LeaveRequest,
    Left,
    PingRequest,
    Pong,
    ProtocolError,
    decode_client_frame,
    decode_server_frame,
    encode,
    encode_chat,
    encode_error,
    encode_joined,
    encode_left,
)
from protocol.codec import PONG_FRAME, describe_invalid
from protocol.frames import PING_FRAME, close_frame, text_frame
from protocol.ids import Sequence
from protocol.messages import ROOM_ID_RULE, ChatBody, JoinBody, RoomId, RoomRef
from tests.support.texts import assert_for_people


def code_of(data: str | bytes) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(data)
    assert info.value.message
    return info.value.code


@pytest.mark.parametrize(
    "frame",
    [
        JoinRequest(JoinBody("123")),
        LeaveRequest(RoomRef("123")),
        ChatRequest(ChatBody("hi")),
        ChatRequest(ChatBody("hi", "123")),
        PingRequest(),
    ],
)
def test_client_frames_round_trip(frame: object) -> None:
    assert decode_client_frame(encode(frame)) == frame


def test_documented_client_frames_decode_as_written() -> None:
    assert decode_client_frame('{"type":"join","payload":{"roomId":"123"}}') == JoinRequest(
        JoinBody("123")
    )
    assert decode_client_frame('{"type":"chat","payload":{"message":"hi"}}') == ChatRequest(
        ChatBody("hi")
    )
    assert decode_client_frame(b'{"type":"ping"}') == PingRequest()
    # Unknown fields are ignored, for forward compatibility.
    assert decode_client_frame('{"type":"ping","extra":1}') == PingRequest()


def test_server_frames_round_trip() -> None:
    chat = decode_server_frame(encode_chat("r", "hi\n\"x\"", "id-1", "c.1", 1700000000000))
    assert isinstance(chat, ChatMessage)
    assert chat.payload.sender == "c.1"
    assert json.loads(encode_chat("r", "m", "i", "f", 5)) == {
        "type": "chat",
        "payload": {"roomId": "r", "message": "m", "id": "i", "from": "f", "ts": 5,
                    "name": "f"},
    }
    named = json.loads(encode_chat("r", "m", "i", "alice", 5, name="Alice A."))
    assert (named["payload"]["from"], named["payload"]["name"]) == ("alice", "Alice A.")
    assert isinstance(decode_server_frame(encode_joined("r", "c")), Joined)
    assert decode_server_frame(encode_left("r")) == Left(RoomRef("r"))
    assert decode_server_frame(PONG_FRAME) == Pong()
    assert json.loads(PONG_FRAME) == {"type": "pong"}
    err = json.loads(encode_error(ErrorCode.NOT_IN_ROOM, "nope"))
    assert err == {"type": "error", "payload": {"code": "not_in_room", "message": "nope"}}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("", ErrorCode.BAD_JSON),
        ("nope", ErrorCode.BAD_JSON),
        ("{", ErrorCode.BAD_JSON),
        ("[]", ErrorCode.BAD_JSON),
        ("42", ErrorCode.BAD_JSON),
        ("null", ErrorCode.BAD_JSON),
        (b"\xff\xfe", ErrorCode.BAD_JSON),
        (b'{"type":"chat","payload":{"message":"\xff"}}', ErrorCode.BAD_JSON),
        ("{}", ErrorCode.UNKNOWN_TYPE),
        ('{"type":"dance"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":null}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":["join"]}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"JOIN","payload":{"roomId":"a"}}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"join"}', ErrorCode.INVALID_PAYLOAD),
        ('{"type":"join","payload":null}', ErrorCode.INVALID_PAYLOAD),
        ('{"type":"join","payload":{"roomid":"a"}}', ErrorCode.INVALID_PAYLOAD),
        ('{"type":"join","payload":{"roomId":1}}', ErrorCode.INVALID_PAYLOAD),
        ('{"type":"chat","payload":{}}', ErrorCode.INVALID_PAYLOAD),
        ('{"type":"chat","payload":{"message":null}}', ErrorCode.INVALID_PAYLOAD),
        ('{"type":"chat","payload":{"message":"x","roomId":""}}', ErrorCode.INVALID_PAYLOAD),
    ],
)
def test_error_codes(data: str | bytes, code: ErrorCode) -> None:
    assert code_of(data) is code


def join(room_id: str) -> str:
    return json.dumps({"type": "join", "payload": {"roomId": room_id}})


@pytest.mark.parametrize("room_id", ["a", "x" * 128, "é" * 128, "🎉" * 128, "r ", " ", "a b"])
def test_room_id_accepted(room_id: str) -> None:
    frame = decode_client_frame(join(room_id))
    assert isinstance(frame, JoinRequest)
    assert frame.payload.room_id == room_id


@pytest.mark.parametrize(
    "room_id",
    ["", "x" * 129, "é" * 129, "a\x00", "\n", "a\tb", "\x1f", "\x7f", "\x80", "\x9f", "end\r"],
)
def test_room_id_refused(room_id: str) -> None:
    assert code_of(join(room_id)) is ErrorCode.INVALID_PAYLOAD


def test_non_control_unicode_near_the_control_ranges_is_allowed() -> None:
    for ch in ("\xa0", "\u200b", "\u2028", "\ufeff"):  # categories Zs, Cf, Zl, Cf: not Cc
        frame = decode_client_frame(join("a" + ch))
        assert isinstance(frame, JoinRequest)


def test_message_boundaries_are_checked_by_the_handler() -> None:
    # The decoder accepts any length; the configurable cap lives in edge.session.
    frame = decode_client_frame(encode(ChatRequest(ChatBody("x" * 5000))))
    assert isinstance(frame, ChatRequest)


def test_text_frame_headers() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    medium = text_frame(b"x" * 300)
    assert medium[:4] == b"\x81\x7e\x01\x2c" and len(medium) == 304
    big = text_frame(b"x" * 70000)
    assert big[:2] == b"\x81\x7f" and int.from_bytes(big[2:10], "big") == 70000
    assert PING_FRAME == b"\x89\x00"
    assert close_frame(1001, "bye") == b"\x88\x05\x03\xe9bye"
    assert len(close_frame(1000, "x" * 500)) == 2 + 125


def test_struct_field_names_on_the_wire() -> None:
    assert msgspec.json.decode(encode(JoinRequest(JoinBody("q")))) == {
        "type": "join",
        "payload": {"roomId": "q"},
    }


INVALID_PAYLOADS = [
    '{"type":"join"}',
    '{"type":"join","payload":null}',
    '{"type":"join","payload":[]}',
    '{"type":"join","payload":"lobby"}',
    '{"type":"join","payload":{"roomid":"a"}}',
    '{"type":"join","payload":{"roomId":1}}',
    '{"type":"join","payload":{"roomId":true}}',
    '{"type":"join","payload":{"roomId":null}}',
    '{"type":"join","payload":{"roomId":""}}',
    join("x" * 129),
    join("a\x00"),
    join("tab\there"),
    join("\x9f"),
    '{"type":"leave"}',
    '{"type":"leave","payload":{"roomId":[]}}',
    join("a\x01").replace("join", "leave"),
    '{"type":"chat"}',
    '{"type":"chat","payload":{}}',
    '{"type":"chat","payload":{"message":null}}',
    '{"type":"chat","payload":{"message":1.5}}',
    '{"type":"chat","payload":{"message":"x","roomId":""}}',
    '{"type":"chat","payload":{"message":"x","roomId":5}}',
    '{"type":"chat","payload":{"message":"x","roomId":"a\\u0007"}}',
    '{"type":"chat","payload":{"message":"x","roomId":"' + "r" * 129 + '"}}',
]


@pytest.mark.parametrize("data", INVALID_PAYLOADS)
def test_invalid_payload_texts_are_for_people(data: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(data)
    assert info.value.code is ErrorCode.INVALID_PAYLOAD
    assert_for_people(info.value.message)
    assert "`payload" in info.value.message  # names the field at fault


def test_invalid_room_id_text_states_the_rule() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(join("bad\x1froom"))
    rule = f"`payload.roomId` is not a valid room id: it must be {ROOM_ID_RULE}"
    assert info.value.message == rule
    with pytest.raises(ProtocolError) as info:
        decode_client_frame('{"type":"chat","payload":{"message":7}}')
    assert info.value.message == "`payload.message` must be a string, not a number"


def test_describe_invalid_never_shows_a_pattern() -> None:
    # The HTTP API and the Publisher validate with the same types.
    for value in ("", "x" * 129, "a\x00", 3, None):
        with pytest.raises(msgspec.ValidationError) as info:
            msgspec.convert(value, RoomId)
        assert_for_people(describe_invalid(info.value))
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(b'{"message": 1}', type=PostedMessage)
    assert describe_invalid(info.value) == "`message` must be a string, not a number"


def test_session_invalid_payload_text_is_for_people() -> None:
    handler = FrameHandler(RoomRegistry(4), Sequence("e", "-"), lambda: 1, 10)
    client = Client("c", None, None)
    handler.handle("m", client, encode(JoinRequest(JoinBody("r"))))
    room = handler.registry.room_by_id("r")
    assert room is not None
    token = handler.registry.probe_due(room, now=0.0, retry=0.1)
    assert token is not None
    handler.registry.probe_returned(room.topic, token)
    [reply] = handler.handle("m", client, encode(ChatRequest(ChatBody("x" * 11, "r"))))
    assert isinstance(reply, Reply)
    error = json.loads(reply.frame)["payload"]
    assert error["code"] == "invalid_payload"
    assert_for_people(error["message"])
