"""What a client frame means, as data: the pure core of an edge.

`FrameHandler.handle` takes the raw text of one client frame and returns the
intents that carry it out (reply, publish, subscribe, unsubscribe, close). It
never touches a socket; `edge.dispatch` executes the intents. Who sent the
frame comes with it as a value (`Client`: its id, token identity and rate
limits), so room permissions and rate limits are decided here too, per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

from edge.auth import Identity, may_join
from edge.presence import PresenceTally
from edge.ratelimit import ConnectionLimits, TokenBucket
from edge.rooms import JoinOutcome, JoinSpec, LeaveOutcome, RoomRegistry
from protocol.chats import check_chat
from protocol.codec import (
    PONG_FRAME,
    ProtocolError,
    decode_client_frame,
    encode_chat,
    encode_error,
    encode_left,
)
from protocol.errors import ErrorCode
from protocol.ids import Sequence
from protocol.messages import (
    ChatBody,
    ChatRequest,
    JoinRequest,
    LeaveRequest,
    PingRequest,
    PresenceRequest,
)
from protocol.presence import report_part
from protocol.stream import dedupe_key
from protocol.topics import room_topic
from protocol.websocket import CloseCode

M = TypeVar("M", bound=Hashable)


class Disconnect(StrEnum):
    """Why a connection ended: the `reason` label of `chat_disconnects_total`."""

    CLIENT = "client"  # the client's close handshake
    ABRUPT = "abrupt"  # the TCP connection dropped without one
    SLOW = "slow"  # its outbox overflowed
    HEARTBEAT = "heartbeat"  # silent for a whole heartbeat interval
    SHUTDOWN = "shutdown"
    TOO_BIG = "too_big"  # a message over the size limit (1009)
    PROTOCOL_ERROR = "protocol_error"  # broke RFC 6455 (1002)
    INVALID_UTF8 = "invalid_utf8"  # a text message that is not UTF-8 (1007)
    TOKEN_EXPIRED = "token_expired"
    RATE_LIMITED = "rate_limited"  # still flooding after being told to slow down


class Client(NamedTuple):
    """Who sent a frame: what the handler needs to know of its connection."""

    connection_id: str
    identity: Identity | None  # from the token; None when the edge runs without a secret
    limits: ConnectionLimits | None  # None: not rate limited
    user: str | None = None  # in open mode, the `user` its upgrade URL claimed
    display_name: str | None = None  # the token's `name` claim, or the URL's `name`

    @property
    def sender(self) -> str:
        """`from` of its chats and `connectionId` of its joins: the token's `sub`,
        in open mode the URL's `user`, else the connection id."""
        if self.identity is not None:
            return self.identity.sub
        return self.user or self.connection_id

    @property
    def name(self) -> str:
        """Its display name: the token's `name` claim or the URL's `name`, else `sender`."""
        if self.identity is not None:
            return self.identity.name or self.identity.sub
        return self.display_name or self.sender


class Reply(NamedTuple):
    """Send `frame` (JSON text) to the connection that sent the request."""

    frame: bytes
    error: ErrorCode | None = None


class Publish(NamedTuple):
    """Send a chat into the broker; it comes back to every member, this edge included.

    With a msgId, `key` is its dedupe key and the sender is owed an `ack`.
    """

    topic: bytes
    body: bytes
    room_id: str = ""
    msg_id: str | None = None
    key: str | None = None


class Admit(NamedTuple):
    """The member is in a live room: `joined` now, or after its replay (edge.continuity).

    `again`: it already was; it gets the current position and no replay.
    """

    topic: bytes
    spec: JoinSpec
    again: bool = False


class Subscribe(NamedTuple):
    """Subscribe to a room's topic and probe it until it is live."""

    topic: bytes


class Await(NamedTuple):
    """The member's `joined` waits for the room to be proven live (--join-timeout at most)."""

    topic: bytes


class Unsubscribe(NamedTuple):
    topic: bytes


class Report(NamedTuple):
    """Tell the room's presence owner of a membership change (`protocol.presence`),
    through the same queue as the room's chats, so it is in order with them."""

    topic: bytes
    part: bytes


class Ask(NamedTuple):
    """Ask the room's presence owner who is in the room (a `presence` request)."""

    topic: bytes
    room_id: str
    cursor: str | None


class Close(NamedTuple):
    """Close the connection from our side with `code`."""

    code: CloseCode
    reason: str
    why: Disconnect


Intent = Reply | Publish | Admit | Subscribe | Await | Unsubscribe | Report | Ask | Close

ABUSE_CLOSE = Close(CloseCode.POLICY_VIOLATION, "rate limit exceeded", Disconnect.RATE_LIMITED)


def error(code: ErrorCode, message: str, msg_id: str | None = None) -> Reply:
    return Reply(encode_error(code, message, msg_id), code)


class FrameHandler(Generic[M]):
    def __init__(
        self,
        registry: RoomRegistry[M],
        message_ids: Sequence,
        clock_ms: Callable[[], int],
        max_message_chars: int,
        path_up: Callable[[str], bool] = lambda room_id: True,
        tally: PresenceTally | None = None,
    ) -> None:
        self.path_up = path_up  # is the path to the room's broker shard live (asked per chat)
        # Membership by user, for the rooms' presence owners (None: not reported).
        self.tally = tally
        self.registry = registry
        self.message_ids = message_ids
        self.clock_ms = clock_ms
        self.max_message_chars = max_message_chars

    def handle(self, member: M, client: Client, data: str | bytes) -> list[Intent]:
        try:
            frame = decode_client_frame(data)
        except ProtocolError as exc:
            return [error(exc.code, exc.message)]
        match frame:
            case ChatRequest(payload=body):
                refused = self._over_limit(client.limits, "chat", body.msg_id)
                if refused is not None:
                    return refused
                return self._chat(member, client, body)
            case JoinRequest(payload=ref):
                refused = self._over_limit(client.limits, "membership")
                if refused is not None:
                    return refused
                if not may_join(client.identity, ref.room_id):
                    return [error(ErrorCode.FORBIDDEN, f"not allowed to join {ref.room_id!r}")]
                spec = JoinSpec(client.sender, ref.history, ref.since, bool(ref.presence))
                return self._join(member, client, ref.room_id, spec)
            case LeaveRequest(payload=ref):
                refused = self._over_limit(client.limits, "membership")
                if refused is not None:
                    return refused
                return self._leave(member, client, ref.room_id)
            case PingRequest():
                return [Reply(PONG_FRAME)]
            case PresenceRequest(payload=query):
                room = self.registry.room_by_id(query.room_id)
                if room is None or not self.registry.is_member(member, query.room_id):
                    return [error(ErrorCode.NOT_IN_ROOM, f"not in room {query.room_id!r}")]
                if not self.path_up(query.room_id):
                    return [error(ErrorCode.UNAVAILABLE, "broker unreachable: ask again later")]
                return [Ask(room.topic, query.room_id, query.cursor)]
        raise AssertionError(f"unhandled frame {frame!r}")  # pragma: no cover

    def binary_frame(self) -> list[Intent]:
        return [error(ErrorCode.BAD_JSON, "binary frames are not supported; send JSON text")]

    def join_timed_out(self, member: M, client: Client, topic: bytes) -> list[Intent]:
        """A join still waiting for its room at its deadline: undone, and said so."""
        room = self.registry.room(topic)
        if room is None or member not in room.waiting:
            return []  # answered meanwhile, or left
        outcome, _ = self.registry.leave(member, room.room_id)
        refusal = error(
            ErrorCode.UNAVAILABLE,
            f"room {room.room_id!r} could not be made live (broker unreachable): not joined",
        )
        intents: list[Intent] = [refusal, *self._left(client, room.topic, room.room_id, False)]
        if outcome is LeaveOutcome.UNSUBSCRIBE:
            intents.append(Unsubscribe(topic))
        return intents

    def disconnect(self, member: M, client: Client, abrupt: bool) -> list[Intent]:
        """The connection ended: `abrupt` unless by the client's close handshake."""
        intents: list[Intent] = []
        if self.tally is not None:
            for room_id in list(self.registry.rooms_of(member)):
                intents += self._left(client, room_topic(room_id), room_id, abrupt)
        intents += [Unsubscribe(room.topic) for room in self.registry.drop(member)]
        return intents

    def _left(self, client: Client, topic: bytes, room_id: str, abrupt: bool) -> list[Intent]:
        if self.tally is None:
            return []
        report = self.tally.left(client.connection_id, room_id, client.sender, abrupt)
        return [] if report is None else [Report(topic, report_part(report))]

    def _over_limit(
        self, limits: ConnectionLimits | None, kind: str, msg_id: str | None = None
    ) -> list[Intent] | None:
        """None if the frame may proceed; else a `rate_limited` error, or the abuse close."""
        if limits is None:
            return None
        bucket: TokenBucket | None = limits.chat if kind == "chat" else limits.membership
        if bucket is None or bucket.take():
            return None
        if bucket.abusive():
            return [ABUSE_CLOSE]
        what = "chats" if kind == "chat" else "joins and leaves"
        return [error(ErrorCode.RATE_LIMITED, f"too many {what}: slow down", msg_id)]

    def _join(self, member: M, client: Client, room_id: str, spec: JoinSpec) -> list[Intent]:
        outcome = self.registry.join(member, room_id, spec, self.path_up(room_id))
        room = self.registry.room_by_id(room_id)
        if outcome is JoinOutcome.ALREADY:
            assert room is not None
            return [Admit(room.topic, JoinSpec(spec.connection_id), again=True)]
        if outcome is JoinOutcome.TOO_MANY_ROOMS:
            limit = self.registry.max_rooms_per_member
            return [error(ErrorCode.TOO_MANY_ROOMS,
                          f"a connection may be in at most {limit} rooms")]
        assert room is not None
        # Reported before anything the member may send in the room.
        intents: list[Intent] = []
        if self.tally is not None:
            report = self.tally.joined(client.connection_id, room_id, client.sender,
                                       client.name, spec.presence)
            if report is not None:
                intents.append(Report(room.topic, report_part(report)))
        if outcome is JoinOutcome.JOINED:
            intents.append(Admit(room.topic, spec))
        elif outcome is JoinOutcome.SUBSCRIBE:
            intents += [Subscribe(room.topic), Await(room.topic)]
        else:  # WAIT
            intents.append(Await(room.topic))
        return intents

    def _leave(self, member: M, client: Client, room_id: str) -> list[Intent]:
        outcome, room = self.registry.leave(member, room_id)
        if outcome is LeaveOutcome.NOT_MEMBER:
            return [error(ErrorCode.NOT_IN_ROOM, f"not in room {room_id!r}")]
        assert room is not None
        intents: list[Intent] = [Reply(encode_left(room_id)),
                                 *self._left(client, room.topic, room_id, False)]
        if outcome is LeaveOutcome.UNSUBSCRIBE:
            intents.append(Unsubscribe(room.topic))
        return intents

    def _chat(self, member: M, client: Client, body: ChatBody) -> list[Intent]:
        room_id, msg_id = body.room_id, body.msg_id
        if room_id is None:
            rooms = list(self.registry.rooms_of(member))
            if not rooms:
                return [error(ErrorCode.NOT_IN_ROOM, "join a room before chatting", msg_id)]
            if len(rooms) > 1:
                return [error(
                    ErrorCode.ROOM_REQUIRED, "in several rooms: say which with `roomId`", msg_id
                )]
            room_id = rooms[0]
        elif not self.registry.is_member(member, room_id):
            return [error(ErrorCode.NOT_IN_ROOM, f"not in room {room_id!r}", msg_id)]
        refused = check_chat(
            room_id, body.message, self.max_message_chars, self.path_up(room_id), room_checked=True
        )
        if refused is not None:
            return [error(*refused, msg_id)]
        room = self.registry.room_by_id(room_id)
        assert room is not None
        chat = encode_chat(
            room_id, body.message, self.message_ids.next(), client.sender, self.clock_ms(),
            msg_id, client.name,
        )
        if msg_id is None:
            return [Publish(room.topic, chat)]
        user = None if client.identity is None else client.identity.sub
        return [Publish(room.topic, chat, room_id, msg_id, dedupe_key(msg_id, user))]
