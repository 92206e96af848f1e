"""The one client-frame decoder, and the encoders for every server frame.

Codec objects are made once at import and reused (msgspec's advice).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from protocol.errors import ErrorCode
from protocol.messages import (
    CLIENT_TYPES,
    ROOM_ID_RULE,
    Ack,
    AckBody,
    ChatBody,
    ChatDelivery,
    ChatMessage,
    ChatRequest,
    ClientFrame,
    Error,
    ErrorBody,
    JoinBody,
    Joined,
    JoinedBody,
    JoinRequest,
    LeaveRequest,
    Left,
    PingRequest,
    Pong,
    Position,
    Presence,
    PresenceBody,
    PresenceFrame,
    PresenceJoin,
    PresenceJoinBody,
    PresenceLeave,
    PresenceLeaveBody,
    PresenceQuery,
    PresenceRequest,
    PresenceUser,
    Resync,
    ResyncBody,
    RoomRef,
    ServerFrame,
)


class ProtocolError(Exception):
    """A frame the server refuses; becomes an error frame, never a crash."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_presence_decoder = msgspec.json.Decoder(PresenceFrame)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

PONG_FRAME = _encoder.encode(Pong())


def decode_client_frame(data: str | bytes) -> ClientFrame:
    """Decode one client frame or raise ProtocolError with the code that fits."""
    try:
        frame: ClientFrame = _client_decoder.decode(data)
        return frame
    except msgspec.ValidationError as exc:
        raise _classify(data, exc) from None
    except (msgspec.DecodeError, UnicodeError):
        raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None


def _classify(data: str | bytes, exc: msgspec.ValidationError) -> ProtocolError:
    # Only reached on the error path: re-read the frame loosely to say what is wrong.
    try:
        value: Any = _any_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeError):
        # The typed decoder stops at the first mismatch; the rest may not even be JSON.
        return ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON")
    if not isinstance(value, dict):
        return ProtocolError(ErrorCode.BAD_JSON, "frame must be a JSON object")
    kind = value.get("type")
    if kind is None:
        return ProtocolError(ErrorCode.UNKNOWN_TYPE, "frame has no `type`")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        known = ", ".join(sorted(CLIENT_TYPES))
        return ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown type {kind!r}; expected one of {known}"
        )
    return ProtocolError(ErrorCode.INVALID_PAYLOAD, describe_invalid(exc))


# msgspec's texts are for programmers (a constraint's text shows its regular
# expression); clients get these instead.
_JSON_KINDS = {
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "object": "an object",
    "array": "an array",
}
_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_MISTYPED = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")


def _kinds(names: str) -> str:
    kinds = dict.fromkeys(_JSON_KINDS.get(n.strip(), n.strip()) for n in names.split("|"))
    return " or ".join(kinds)


def describe_invalid(exc: msgspec.ValidationError) -> str:
    """A validation error as a sentence for people: which field, what is wrong."""
    problem, _, where = str(exc).partition(" - at `")
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    if missing := _MISSING.fullmatch(problem):
        field = f"{path}.{missing[1]}" if path else missing[1]
        return f"`{field}` is missing"
    field = path or "the frame"
    if mistyped := _MISTYPED.fullmatch(problem):
        return f"`{field}` must be {_kinds(mistyped[1])}, not {_kinds(mistyped[2])}"
    if path.endswith("roomId"):
        return f"`{field}` is not a valid room id: it must be {ROOM_ID_RULE}"
    return f"`{field}` has a value that is not allowed"


def decode_server_frame(data: str | bytes) -> ServerFrame:
    frame: ServerFrame = _server_decoder.decode(data)
    return frame


def encode(frame: Any) -> bytes:
    return _encoder.encode(frame)


def encode_chat(
    room_id: str, message: str, message_id: str, sender: str, ts: int,
    msg_id: str | None = None, name: str | None = None,
) -> bytes:
    """A chat as members receive it, less the epoch and offset its sequencer stamps on.

    `sender` is the user (`from`); `name` its display name (default: the user).
    """
    return _encoder.encode(
        ChatMessage(ChatDelivery(room_id, message, message_id, sender, ts, msg_id,
                                 sender if name is None else name))
    )


def encode_joined(
    room_id: str,
    connection_id: str,
    epoch: str | None = None,
    offset: int | None = None,
    recovered: bool | None = None,
) -> bytes:
    return _encoder.encode(
        Joined(JoinedBody(room_id, connection_id, epoch, offset, recovered))
    )


def encode_left(room_id: str) -> bytes:
    return _encoder.encode(Left(RoomRef(room_id)))


def encode_error(code: ErrorCode, message: str, msg_id: str | None = None) -> bytes:
    return _encoder.encode(Error(ErrorBody(code.value, message, msg_id)))


def encode_ack(
    room_id: str, msg_id: str, epoch: str, offset: int, duplicate: bool = False
) -> bytes:
    return _encoder.encode(Ack(AckBody(room_id, msg_id, epoch, offset, duplicate)))


def encode_resync(room_id: str, epoch: str, offset: int) -> bytes:
    return _encoder.encode(Resync(ResyncBody(room_id, epoch, offset)))


# Presence (protocol v2 section 7).


def encode_presence(
    room_id: str,
    users: list[tuple[str, str, int]],
    next_cursor: str | None = None,
    events: bool = True,
) -> bytes:
    """One page of a room's presence listing: (user, name, connections), in user order."""
    return _encoder.encode(Presence(PresenceBody(
        room_id, [PresenceUser(*u) for u in users], next_cursor, events
    )))


def encode_presence_join(room_id: str, user: str, name: str) -> bytes:
    return _encoder.encode(PresenceJoin(PresenceJoinBody(room_id, user, name)))


def encode_presence_leave(room_id: str, user: str) -> bytes:
    return _encoder.encode(PresenceLeave(PresenceLeaveBody(room_id, user)))


def decode_presence_frame(data: str | bytes) -> PresenceFrame:
    """A server's presence frame (section 7); clients and tests."""
    frame: PresenceFrame = _presence_decoder.decode(data)
    return frame


def _type_of(data: str | bytes) -> object:
    value: Any = _any_decoder.decode(data)
    return value.get("type") if isinstance(value, dict) else None


# Client to server: the frames a client sends.

PING_REQUEST = _encoder.encode(PingRequest())


def encode_join(
    room_id: str,
    history: int | None = None,
    since: tuple[str, int] | None = None,
    presence: bool | None = None,
) -> bytes:
    """A join; `history` K replays the last K chats, `since` (epoch, offset) recovers,
    `presence` also subscribes to the room's presence events."""
    position = Position(*since) if since is not None else None
    return _encoder.encode(JoinRequest(JoinBody(room_id, history, position, presence)))


def encode_leave(room_id: str) -> bytes:
    return _encoder.encode(LeaveRequest(RoomRef(room_id)))


def encode_chat_request(
    message: str, room_id: str | None = None, msg_id: str | None = None
) -> bytes:
    """A chat; without `room_id` the server picks the sender's only room."""
    return _encoder.encode(ChatRequest(ChatBody(message, room_id, msg_id)))


def encode_presence_request(room_id: str, cursor: str | None = None) -> bytes:
    """Who is in the room; `cursor` (a page's `next`) for the page after it."""
    return _encoder.encode(PresenceRequest(PresenceQuery(room_id, cursor)))
