"""What a client frame means, as data: the pure core of an edge.

`FrameHandler.handle` takes the raw text of one client frame and returns the
intents that carry it out (reply, publish, subscribe, unsubscribe, close). It
never touches a socket; the I/O shell (`edge.hub`) executes the intents. Room
permissions and rate limits are asked of callables given at construction, so
they are decided here too, per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

from edge.ratelimit import ConnectionLimits, TokenBucket
from edge.rooms import JoinOutcome, LeaveOutcome, RoomRegistry
from protocol.codec import (
    PONG_FRAME,
    ProtocolError,
    decode_client_frame,
    encode_chat,
    encode_error,
    encode_joined,
    encode_left,
)
from protocol.errors import ErrorCode
from protocol.ids import Sequence
from protocol.messages import ChatRequest, JoinRequest, LeaveRequest, PingRequest

M = TypeVar("M", bound=Hashable)


class Reply(NamedTuple):
    """Send `frame` (JSON text) to the connection that sent the request."""

    frame: bytes
    error: ErrorCode | None = None


class Publish(NamedTuple):
    """Send a chat into the broker; it comes back to every member, this edge included."""

    topic: bytes
    body: bytes


class Subscribe(NamedTuple):
    """Subscribe to a room's topic and probe it until it is live."""

    topic: bytes


class Unsubscribe(NamedTuple):
    topic: bytes


class Close(NamedTuple):
    """Close the connection from our side with `code`; `why` is the disconnect reason."""

    code: int
    reason: str
    why: str


Intent = Reply | Publish | Subscribe | Unsubscribe | Close

ABUSE_CLOSE = Close(1008, "rate limit exceeded", "rate_limited")


def error(code: ErrorCode, message: str) -> Reply:
    return Reply(encode_error(code, message), code)


class FrameHandler(Generic[M]):
    def __init__(
        self,
        registry: RoomRegistry[M],
        message_ids: Sequence,
        clock_ms: Callable[[], int],
        max_message_chars: int,
        path_up: Callable[[], bool] = lambda: True,
        may_join: Callable[[M, str], bool] | None = None,
        limits: Callable[[M], ConnectionLimits | None] | None = None,
    ) -> None:
        # Policy, asked per frame: may this member join that room; its rate limits.
        self.may_join = may_join
        self.limits = limits
        self.path_up = path_up
        self.registry = registry
        self.message_ids = message_ids
        self.clock_ms = clock_ms
        self.max_message_chars = max_message_chars

    def handle(self, member: M, connection_id: str, data: str | bytes) -> list[Intent]:
        try:
            frame = decode_client_frame(data)
        except ProtocolError as exc:
            return [error(exc.code, exc.message)]
        match frame:
            case ChatRequest(payload=body):
                refused = self._over_limit(member, "chat")
                if refused is not None:
                    return refused
                return self._chat(member, connection_id, body.room_id, body.message)
            case JoinRequest(payload=ref):
                refused = self._over_limit(member, "membership")
                if refused is not None:
                    return refused
                if self.may_join is not None and not self.may_join(member, ref.room_id):
                    return [error(ErrorCode.FORBIDDEN, f"not allowed to join {ref.room_id!r}")]
                return self._join(member, connection_id, ref.room_id)
            case LeaveRequest(payload=ref):
                refused = self._over_limit(member, "membership")
                if refused is not None:
                    return refused
                return self._leave(member, ref.room_id)
            case PingRequest():
                return [Reply(PONG_FRAME)]
        raise AssertionError(f"unhandled frame {frame!r}")  # pragma: no cover

    def binary_frame(self) -> list[Intent]:
        return [error(ErrorCode.BAD_JSON, "binary frames are not supported; send JSON text")]

    def disconnect(self, member: M) -> list[Intent]:
        return [Unsubscribe(room.topic) for room in self.registry.drop(member)]

    def acknowledge_live(self, topic: bytes, connection_id: Callable[[M], str]) -> list[
        tuple[M, bytes]
    ]:
        """The room behind `topic` is live: the `joined` replies now due."""
        room = self.registry.room(topic)
        waiting = self.registry.mark_live(topic)
        if room is None:
            return []
        return [(m, encode_joined(room.room_id, connection_id(m))) for m in waiting]

    def _over_limit(self, member: M, kind: str) -> list[Intent] | None:
        """None if the frame may proceed; else a `rate_limited` error, or the abuse close."""
        limits = self.limits(member) if self.limits is not None else None
        if limits is None:
            return None
        bucket: TokenBucket | None = limits.chat if kind == "chat" else limits.membership
        if bucket is None or bucket.take():
            return None
        if bucket.abusive():
            return [ABUSE_CLOSE]
        what = "chats" if kind == "chat" else "joins and leaves"
        return [error(ErrorCode.RATE_LIMITED, f"too many {what}: slow down")]

    def _join(self, member: M, connection_id: str, room_id: str) -> list[Intent]:
        outcome = self.registry.join(member, room_id)
        if outcome is JoinOutcome.JOINED:
            return [Reply(encode_joined(room_id, connection_id))]
        if outcome is JoinOutcome.SUBSCRIBE:
            room = self.registry.room_by_id(room_id)
            assert room is not None
            return [Subscribe(room.topic)]
        if outcome is JoinOutcome.WAIT:
            return []
        limit = self.registry.max_rooms_per_member
        return [error(ErrorCode.TOO_MANY_ROOMS, f"a connection may be in at most {limit} rooms")]

    def _leave(self, member: M, room_id: str) -> list[Intent]:
        outcome, room = self.registry.leave(member, room_id)
        if outcome is LeaveOutcome.NOT_MEMBER:
            return [error(ErrorCode.NOT_IN_ROOM, f"not in room {room_id!r}")]
        left = Reply(encode_left(room_id))
        if outcome is LeaveOutcome.UNSUBSCRIBE:
            assert room is not None
            return [left, Unsubscribe(room.topic)]
        return [left]

    def _chat(
        self, member: M, connection_id: str, room_id: str | None, message: str
    ) -> list[Intent]:
        if room_id is None:
            rooms = list(self.registry.rooms_of(member))
            if not rooms:
                return [error(ErrorCode.NOT_IN_ROOM, "join a room before chatting")]
            if len(rooms) > 1:
                return [
                    error(ErrorCode.ROOM_REQUIRED, "in several rooms: say which with `roomId`")
                ]
            room_id = rooms[0]
        elif not self.registry.is_member(member, room_id):
            return [error(ErrorCode.NOT_IN_ROOM, f"not in room {room_id!r}")]
        if len(message) > self.max_message_chars:
            return [
                error(
                    ErrorCode.INVALID_PAYLOAD,
                    f"message is longer than {self.max_message_chars} characters",
                )
            ]
        if not self.path_up():
            # Refuse loudly rather than publish into a broken path and lose it.
            return [error(ErrorCode.UNAVAILABLE, "broker unreachable: message not sent")]
        room = self.registry.room_by_id(room_id)
        assert room is not None
        body = encode_chat(
            room_id, message, self.message_ids.next(), connection_id, self.clock_ms()
        )
        return [Publish(room.topic, body)]
