"""Every way a chatclient call can fail, as exception types.

An error frame from the server becomes a `ChatError` subclass chosen by its
code, so callers can catch exactly what they expect (`except RateLimited`)
and still read `exc.code` and `exc.message`. A code this version does not
know yet still arrives as a plain `ChatError`.
"""

from __future__ import annotations

from protocol.errors import ErrorCode


class ClientError(Exception):
    """Base of every error this package raises."""


class ConnectionLost(ClientError):
    """The connection dropped before the server answered; the request may or may not have
    taken effect. The client reconnects by itself, and resends a chat (with the same msgId,
    so it is delivered once) until its resend window ends: then `send` raises this."""


class ClientClosed(ClientError):
    """The client was closed (or gave up) while the call was waiting."""


class Unauthorized(ClientError):
    """The server refused the WebSocket upgrade (HTTP 401 or 403): a token is missing,
    invalid or expired, or the origin is not allowed. Retrying will not help."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url} refused the connection with HTTP {status}")
        self.url = url
        self.status = status


class ChatError(ClientError):
    """An error frame: the server refused a request. `code` is the protocol's error code."""

    code: str = ""

    def __init__(self, message: str, code: str | None = None, msg_id: str | None = None) -> None:
        super().__init__(f"{code or self.code}: {message}")
        if code is not None:
            self.code = code
        self.message = message
        self.msg_id = msg_id  # the chat it refused, when that chat carried a msgId


class BadJson(ChatError):
    code = ErrorCode.BAD_JSON.value


class UnknownType(ChatError):
    code = ErrorCode.UNKNOWN_TYPE.value


class InvalidPayload(ChatError):
    code = ErrorCode.INVALID_PAYLOAD.value


class NotInRoom(ChatError):
    code = ErrorCode.NOT_IN_ROOM.value


class RoomRequired(ChatError):
    code = ErrorCode.ROOM_REQUIRED.value


class TooManyRooms(ChatError):
    code = ErrorCode.TOO_MANY_ROOMS.value


class Forbidden(ChatError):
    code = "forbidden"


class RateLimited(ChatError):
    code = "rate_limited"


class Unavailable(ChatError):
    """The edge cannot reach the broker, or got no ack for the chat within 5 s: it may
    be sent again (with its msgId, `send` does so by itself a few times)."""

    code = "unavailable"


ERROR_TYPES: dict[str, type[ChatError]] = {
    cls.code: cls
    for cls in (
        BadJson, UnknownType, InvalidPayload, NotInRoom, RoomRequired, TooManyRooms,
        Forbidden, RateLimited, Unavailable,
    )
}


def chat_error(code: str, message: str, msg_id: str | None = None) -> ChatError:
    """The exception for an error frame with `code` (about the chat `msg_id`, if given)."""
    kind = ERROR_TYPES.get(code)
    if kind is None:
        return ChatError(message, code, msg_id)
    return kind(message, msg_id=msg_id)
