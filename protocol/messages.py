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


# A client's id for one chat, so that sending it twice delivers it once
# (protocol v2 section 5): 1 to 64 characters from A-Z a-z 0-9 . _ : -
MSG_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}\Z"
MSG_ID_RULE = "1 to 64 characters from A-Z a-z 0-9 . _ : -"
MsgId = Annotated[str, msgspec.Meta(pattern=MSG_ID_PATTERN)]
Epoch = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Offset = Annotated[int, msgspec.Meta(ge=0)]


class RoomRef(msgspec.Struct, rename="camel"):
    room_id: RoomId


class ChatBody(msgspec.Struct, rename="camel", omit_defaults=True):
    message: str
    room_id: RoomId | None = None
    msg_id: MsgId | None = None


class Position(msgspec.Struct):
    """Where a client is in a room's stream: the last offset it saw, in an epoch."""

    epoch: Epoch
    offset: Offset


class JoinBody(msgspec.Struct, rename="camel", omit_defaults=True):
    room_id: RoomId
    history: Offset | None = None  # replay the last K chats after `joined`
    since: Position | None = None  # recover what was missed after this position
    presence: bool | None = None  # also receive the room's presence events (section 7)


# A `presence` listing's cursor: opaque to clients, who send back the `next`
# of the page before to get the next one (see protocol.presence).
MAX_CURSOR_CHARS = 256
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CURSOR_CHARS)]


class PresenceQuery(msgspec.Struct, rename="camel", omit_defaults=True):
    room_id: RoomId
    cursor: Cursor | None = None  # the `next` of the page before; none for the first page


# Client to server.


class JoinRequest(_Frame, tag="join"):
    payload: JoinBody


class LeaveRequest(_Frame, tag="leave"):
    payload: RoomRef


class ChatRequest(_Frame, tag="chat"):
    payload: ChatBody


class PingRequest(_Frame, tag="ping"):
    pass


class PresenceRequest(_Frame, tag="presence"):
    payload: PresenceQuery


ClientFrame = JoinRequest | LeaveRequest | ChatRequest | PingRequest | PresenceRequest
CLIENT_TYPES = frozenset({"join", "leave", "chat", "ping", "presence"})


# Server to client.


class JoinedBody(msgspec.Struct, rename="camel", omit_defaults=True):
    room_id: str
    connection_id: str
    epoch: str | None = None
    offset: int | None = None  # the room's top when the membership became live
    recovered: bool | None = None  # only in answer to a join with `since`


class ChatDelivery(msgspec.Struct, rename="camel", omit_defaults=True):
    room_id: str
    message: str
    id: str
    sender: str = msgspec.field(name="from")
    ts: int = 0
    msg_id: str | None = None
    name: str | None = None  # the sender's display name (protocol v2 section 7)
    # Stamped by the room's sequencer, after everything else (see protocol.stream).
    epoch: str | None = None
    offset: int | None = None


class AckBody(msgspec.Struct, rename="camel", omit_defaults=True):
    room_id: str
    msg_id: str
    epoch: str
    offset: int
    duplicate: bool = False


class ResyncBody(msgspec.Struct, rename="camel"):
    room_id: str
    epoch: str
    offset: int


class ErrorBody(msgspec.Struct, rename="camel", omit_defaults=True):
    code: str
    message: str
    msg_id: str | None = None  # the chat this error is about, when it carried one


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


class Ack(_Frame, tag="ack"):
    payload: AckBody


class Resync(_Frame, tag="resync"):
    payload: ResyncBody


# Presence (section 7).


class PresenceUser(msgspec.Struct):
    user: str
    name: str
    connections: int


class PresenceBody(msgspec.Struct, rename="camel", omit_defaults=True):
    room_id: str
    users: list[PresenceUser]
    # More users follow: ask again with this as `cursor`. Absent on the last page.
    next: str | None = None
    # False: the room is too big for presence events (none is sent for it);
    # ask for the list again to see who is here. Absent while events are on.
    events: bool = True


class PresenceJoinBody(msgspec.Struct, rename="camel"):
    room_id: str
    user: str
    name: str


class PresenceLeaveBody(msgspec.Struct, rename="camel"):
    room_id: str
    user: str


class Presence(_Frame, tag="presence"):
    payload: PresenceBody


class PresenceJoin(_Frame, tag="presence_join"):
    payload: PresenceJoinBody


class PresenceLeave(_Frame, tag="presence_leave"):
    payload: PresenceLeaveBody


# Section 7's server frames.
PresenceFrame = Presence | PresenceJoin | PresenceLeave
ServerFrame = Joined | Left | ChatMessage | Pong | Error | Ack | Resync | PresenceFrame
