"""The rules a chat must meet to be published, written once.

Every way into a room goes through `check_chat`: a client's WebSocket frame,
`POST /api/rooms/{id}/messages`, and `chatclient.Publisher`. Each maps the
refusal to its own shape (an error frame, an HTTP status, an exception), but
the rule and its text are the same everywhere.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from protocol.errors import ErrorCode
from protocol.messages import ROOM_ID_RULE, RoomId


class Refusal(NamedTuple):
    code: ErrorCode
    text: str


def check_room_id(room_id: str) -> Refusal | None:
    try:
        msgspec.convert(room_id, RoomId)
    except msgspec.ValidationError:
        return Refusal(ErrorCode.INVALID_PAYLOAD, f"the room id must be {ROOM_ID_RULE}")
    return None


def check_chat(
    room_id: str, message: str, max_message_chars: int, path_up: bool, *, room_checked: bool = False
) -> Refusal | None:
    """None if the chat may be published; else why not.

    `room_checked`: the room id was already validated (a decoded client frame).
    `path_up`: the broker path is known to work; publishing into a broken one
    would lose the chat silently, so it is refused loudly instead.
    """
    if not room_checked:
        refused = check_room_id(room_id)
        if refused is not None:
            return refused
    if len(message) > max_message_chars:
        return Refusal(
            ErrorCode.INVALID_PAYLOAD, f"message is longer than {max_message_chars} characters"
        )
    if not path_up:
        return Refusal(ErrorCode.UNAVAILABLE, "broker unreachable: message not sent")
    return None
