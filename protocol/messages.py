"""Frame schemas: a tagged union on `type`, each with a `payload` struct.

Field names are snake_case in Python and camelCase on the wire (`room_id` is
`roomId`). Unknown fields are ignored so that clients can send extra data
without breaking older servers.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_ROOM_ID_CHARS = 128
# Unicode category Cc is exactly U+0000..U+001F and U+007F..U+009F. Excluding
# U+0000 also lets a NUL byte terminate room topics on the broker.
ROOM_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*\Z"
# What a client is told when a room id breaks the rules above: people read it,
# so it states the rule rather than showing the pattern.
ROOM_ID_RULE = (
    f"1 to {MAX_ROOM_ID_CHARS} characters, "
    "with no control characters (U+0000 to U+001F, U+007F to U+009F)"
)

RoomId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_ROOM_ID_CHARS, pattern=ROOM_ID_PATTERN)
]


class _Frame(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


class RoomRef(msgspec.Struct, rename="camel"):
    room_id: RoomId


class ChatBody(msgspec.Struct, rename="camel", omit_defaults=True):
    message: str
    room_id: RoomId | None = None


# Client to server.


class JoinRequest(_Frame, tag="join"):
    payload: RoomRef


class LeaveRequest(_Frame, tag="leave"):
    payload: RoomRef


class ChatRequest(_Frame, tag="chat"):
    payload: ChatBody


class PingRequest(_Frame, tag="ping"):
    pass


ClientFrame = JoinRequest | LeaveRequest | ChatRequest | PingRequest
CLIENT_TYPES = frozenset({"join", "leave", "chat", "ping"})


# Server to client.


class JoinedBody(msgspec.Struct, rename="camel"):
    room_id: str
    connection_id: str


class ChatDelivery(msgspec.Struct, rename="camel"):
    room_id: str
    message: str
    id: str
    sender: str = msgspec.field(name="from")
    ts: int = 0


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class Joined(_Frame, tag="joined"):
    payload: JoinedBody


class Left(_Frame, tag="left"):
    payload: RoomRef


class ChatMessage(_Frame, tag="chat"):
    payload: ChatDelivery


class Pong(_Frame, tag="pong"):
    pass


class Error(_Frame, tag="error"):
    payload: ErrorBody


ServerFrame = Joined | Left | ChatMessage | Pong | Error
