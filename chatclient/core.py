"""Which server frame answers which request: the client's pure core.

Protocol v1 has no request ids. It does not need them: an edge handles the
frames of one connection in order and answers each at once, except that a
`joined` may wait until the room's subscription is live. So every request is
sent followed by a `ping`. Whatever error arrives before that ping's `pong`
answers the request; a `pong` with no error before it means "accepted". A
join is complete once its `joined` has also arrived, before or after the
`pong`.

`Tracker` holds that bookkeeping and turns each decoded server frame into
events. It never touches a socket, so it is tested without one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from chatclient.errors import ChatError, chat_error
from protocol.codec import (
    PING_REQUEST,
    encode_chat_request,
    encode_join,
    encode_leave,
)
from protocol.messages import (
    Ack,
    ChatDelivery,
    ChatMessage,
    Error,
    Joined,
    Left,
    Pong,
    Resync,
    ServerFrame,
)


class Kind(Enum):
    JOIN = "join"
    LEAVE = "leave"
    CHAT = "chat"
    PING = "ping"
    RAW = "raw"


@dataclass(eq=False)
class Request:
    """One request and, once answered, its outcome."""

    kind: Kind
    frame: bytes
    room_id: str | None = None
    error: ChatError | None = None
    accepted: bool = False  # its pong came back
    connection_id: str | None = None  # from the `joined` that answered a join

    @classmethod
    def join(cls, room_id: str) -> Request:
        return cls(Kind.JOIN, encode_join(room_id), room_id)

    @classmethod
    def leave(cls, room_id: str) -> Request:
        return cls(Kind.LEAVE, encode_leave(room_id), room_id)

    @classmethod
    def chat(cls, room_id: str | None, message: str) -> Request:
        return cls(Kind.CHAT, encode_chat_request(message, room_id), room_id)

    @classmethod
    def ping(cls) -> Request:
        return cls(Kind.PING, PING_REQUEST)

    @classmethod
    def raw(cls, frame: bytes) -> Request:
        """Any text, sent as is: for testing servers."""
        return cls(Kind.RAW, frame)

    @property
    def done(self) -> bool:
        if self.error is not None:
            return True
        if self.kind is Kind.JOIN:
            return self.accepted and self.connection_id is not None
        return self.accepted


class Done(NamedTuple):
    """A request is answered: `request.error` is None on success."""

    request: Request


class Delivered(NamedTuple):
    message: ChatDelivery


class Stray(NamedTuple):
    """An error frame no outstanding request explains."""

    error: ChatError


Event = Done | Delivered | Stray


class Tracker:
    """The requests of one connection that still wait for their answer."""

    def __init__(self) -> None:
        self._unanswered: deque[Request] = deque()  # oldest first, each awaits its pong
        self._joining: dict[str, list[Request]] = {}  # accepted joins awaiting `joined`
        self.connection_id: str | None = None

    def send(self, request: Request) -> list[bytes]:
        """The frames to write, in this order and with nothing between them."""
        self._unanswered.append(request)
        if request.kind is Kind.PING:
            return [request.frame]
        return [request.frame, PING_REQUEST]

    def outstanding(self) -> int:
        return len(self._unanswered) + sum(len(w) for w in self._joining.values())

    def receive(self, frame: ServerFrame) -> list[Event]:
        match frame:
            case ChatMessage(payload=delivery):
                return [Delivered(delivery)]
            case Pong():
                return self._pong()
            case Error(payload=body):
                return self._error(chat_error(body.code, body.message))
            case Joined(payload=body):
                return self._joined(body.room_id, body.connection_id)
            case Left():
                return []  # a leave completes at its pong, which follows at once
            case Ack() | Resync():
                return []

    def lost(self) -> list[Request]:
        """The connection is gone: every request still waiting, oldest first."""
        waiting = list(self._unanswered)
        for joins in self._joining.values():
            waiting.extend(joins)
        self._unanswered.clear()
        self._joining.clear()
        self.connection_id = None
        return waiting

    def _pong(self) -> list[Event]:
        if not self._unanswered:
            return []
        request = self._unanswered.popleft()
        if request.error is not None:
            return []  # already reported when its error arrived
        request.accepted = True
        if request.done:
            return [Done(request)]
        assert request.room_id is not None  # only a join waits past its pong
        self._joining.setdefault(request.room_id, []).append(request)
        return []

    def _error(self, error: ChatError) -> list[Event]:
        head = self._unanswered[0] if self._unanswered else None
        if head is None or head.error is not None:
            return [Stray(error)]
        head.error = error
        return [Done(head)]

    def _joined(self, room_id: str, connection_id: str) -> list[Event]:
        self.connection_id = connection_id
        events: list[Event] = []
        for request in self._joining.pop(room_id, []):
            request.connection_id = connection_id
            events.append(Done(request))
        # A join of a room already live is answered before its pong.
        for request in self._unanswered:
            if request.kind is Kind.JOIN and request.room_id == room_id and request.error is None:
                request.connection_id = connection_id
        return events
