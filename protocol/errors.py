"""Error codes a server sends in `{"type":"error","payload":{"code":...}}` frames."""

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"  # not JSON, not an object, or not a text frame
    UNKNOWN_TYPE = "unknown_type"  # `type` missing or not one this server knows
    INVALID_PAYLOAD = "invalid_payload"  # a field missing, mistyped or out of bounds
    NOT_IN_ROOM = "not_in_room"  # chat into a room the connection has not joined
    ROOM_REQUIRED = "room_required"  # short-form chat while in several rooms
    TOO_MANY_ROOMS = "too_many_rooms"  # join beyond the per-connection room cap
    UNAVAILABLE = "unavailable"  # broker path down: the chat was not sent, try again
    FORBIDDEN = "forbidden"  # join a room the token does not allow
    RATE_LIMITED = "rate_limited"  # chats or joins/leaves faster than allowed
