"""Which server frame answers which request, and where each room's stream is:
the client's pure core.

Protocol v1 has no request ids. It does not need them: an edge handles the
frames of one connection in order and answers each at once, except that a
`joined` may wait until the room's subscription is live. So every request is
sent followed by a `ping`. Whatever error arrives before that ping's `pong`
answers the request; a `pong` with no error before it means "accepted". A
join is complete once its `joined` has also arrived, before or after the
`pong`.

Protocol v2 adds ids where an answer can come late: a chat carries a `msgId`
and is complete at its `ack`, or at an `error` naming that msgId (an
`unavailable` may come seconds after the `pong`). Errors that name a msgId
are matched by it, never by order. A `presence` request (section 7) is
complete once its `presence` reply has also arrived, before or after the
`pong`; replies carry their room, and one room's are matched in order.

The tracker also follows each joined room's stream: the epoch and the last
offset seen, from `joined`, every chat and `resync`. That position outlives
a connection, so the next one can rejoin with `since` and receive exactly
what was missed; a chat at or below the position in the same epoch has been
seen already and is dropped, so a replay that overlaps never shows twice.

Presence events (`presence_join`, `presence_leave`) are passed on as they
come: they belong to no request and to no stream position.

`Tracker` holds that bookkeeping and turns each decoded server frame into
events. It never touches a socket, so it is tested without one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from chatclient.errors import ChatError, chat_error
from protocol.codec import (
    PING_REQUEST,
    encode_chat_request,
    encode_join,
    encode_leave,
    encode_presence_request,
)
from protocol.messages import Ack as AckFrame
from protocol.messages import (
    AckBody,
    ChatDelivery,
    ChatMessage,
    Error,
    JoinedBody,
    Left,
    Pong,
    Presence,
    PresenceBody,
    ServerFrame,
)
from protocol.messages import Joined as JoinedFrame
from protocol.messages import PresenceJoin as PresenceJoinFrame
from protocol.messages import PresenceLeave as PresenceLeaveFrame
from protocol.messages import Resync as ResyncFrame


class Kind(Enum):
    JOIN = "join"
    LEAVE = "leave"
    CHAT = "chat"
    PING = "ping"
    PRESENCE = "presence"
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
    history: int | None = None  # a join's `history` K
    since: tuple[str, int] | None = None  # a join's `since` (epoch, offset)
    presence_events: bool = False  # a join's `presence`: the room's presence events too
    listing: PresenceBody | None = None  # the page answering a presence request
    msg_id: str | None = None  # a chat's msgId: it completes at its ack
    ack: AckBody | None = None
    reported: bool = False  # its Done was emitted

    @classmethod
    def join(
        cls,
        room_id: str,
        history: int | None = None,
        since: tuple[str, int] | None = None,
        presence: bool = False,
    ) -> Request:
        return cls(
            Kind.JOIN, encode_join(room_id, history, since, presence or None), room_id,
            history=history, since=since, presence_events=presence,
        )

    @classmethod
    def leave(cls, room_id: str) -> Request:
        return cls(Kind.LEAVE, encode_leave(room_id), room_id)

    @classmethod
    def chat(cls, room_id: str | None, message: str, msg_id: str | None = None) -> Request:
        return cls(
            Kind.CHAT, encode_chat_request(message, room_id, msg_id), room_id, msg_id=msg_id
        )

    @classmethod
    def presence(cls, room_id: str, cursor: str | None = None) -> Request:
        """One page of who is in the room: the first, or the one after `cursor`."""
        return cls(Kind.PRESENCE, encode_presence_request(room_id, cursor), room_id)

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
        if self.kind is Kind.PRESENCE:
            return self.accepted and self.listing is not None
        if self.msg_id is not None:
            return self.ack is not None
        return self.accepted


@dataclass(frozen=True, slots=True)
class Joined:
    """A room's membership is live on this connection. `recovered` answers a rejoin
    with `since`: True when every missed chat follows, False when some may be lost
    (None for a join that did not ask to recover)."""

    room_id: str
    connection_id: str
    epoch: str | None
    offset: int | None  # the room's top: the first live chat is offset + 1
    recovered: bool | None = None


@dataclass(frozen=True, slots=True)
class Resynced:
    """The room's stream could not be repaired: chats continue from offset + 1 of
    `epoch`, and some chats before that may never arrive."""

    room_id: str
    epoch: str
    offset: int


StreamEvent = Joined | Resynced


@dataclass(frozen=True, slots=True)
class Member:
    """A user in a room: its display name and how many connections it has there."""

    user: str
    name: str
    connections: int


class Listing(list[Member]):
    """A room's members as a presence listing gave them (`ChatClient.presence`): a
    list of `Member`, and whether the room publishes join and leave events.

    `events` is False for a room above the server's events limit
    (`--presence-events-max-members`): no `PresenceJoin` or `PresenceLeave`
    comes for it, so a roster kept from events goes stale; list it again to
    see who is there.
    """

    def __init__(self, members: Iterable[Member] = (), events: bool = True) -> None:
        super().__init__(members)
        self.events = events


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """A user's first connection joined the room (for members that joined with
    `presence=True`)."""

    room_id: str
    user: str
    name: str


@dataclass(frozen=True, slots=True)
class PresenceLeave:
    """A user's last connection left the room: at once after a leave or a clean
    close, after the server's grace period when it dropped."""

    room_id: str
    user: str


PresenceEvent = PresenceJoin | PresenceLeave


class Done(NamedTuple):
    """A request is answered: `request.error` is None on success."""

    request: Request


class Delivered(NamedTuple):
    message: ChatDelivery


class Noted(NamedTuple):
    """Something happened to a room's stream, or to who is in it, that the application
    may want to show."""

    event: StreamEvent | PresenceEvent


class Stray(NamedTuple):
    """An error frame no outstanding request explains."""

    error: ChatError


Event = Done | Delivered | Noted | Stray


@dataclass(slots=True)
class Position:
    """The last offset seen in a room, in its epoch."""

    epoch: str
    offset: int


class Tracker:
    """The requests of one connection that still wait for their answer, and the
    position in every joined room's stream (which outlives the connection)."""

    def __init__(self) -> None:
        self._unanswered: deque[Request] = deque()  # oldest first, each awaits its pong
        self._joining: dict[str, list[Request]] = {}  # accepted joins awaiting `joined`
        self._listing: dict[str, deque[Request]] = {}  # accepted presence requests, by room
        self._acks: dict[str, Request] = {}  # chats awaiting their ack, by msgId
        self._positions: dict[str, Position] = {}
        self._live: set[str] = set()  # rooms with a `joined` on this connection
        self.connection_id: str | None = None
        self.duplicates = 0  # deliveries dropped as already seen

    def send(self, request: Request) -> list[bytes]:
        """The frames to write, in this order and with nothing between them."""
        self._unanswered.append(request)
        if request.msg_id is not None:
            self._acks[request.msg_id] = request
        if request.kind is Kind.PING:
            return [request.frame]
        return [request.frame, PING_REQUEST]

    def outstanding(self) -> int:
        waiting = set(self._unanswered) | set(self._acks.values())
        return (
            len(waiting)
            + sum(len(w) for w in self._joining.values())
            + sum(len(w) for w in self._listing.values())
        )

    def position(self, room_id: str) -> tuple[str, int] | None:
        """(epoch, offset) of the last chat seen in the room: a rejoin's `since`."""
        pos = self._positions.get(room_id)
        return None if pos is None else (pos.epoch, pos.offset)

    def abandon(self, request: Request) -> None:
        """The caller stopped waiting for `request`: a later reply must not answer it,
        or every later presence request of its room would get the reply before its own."""
        listing = self._listing.get(request.room_id or "")
        if listing is not None and request in listing:
            listing.remove(request)
            if not listing:
                del self._listing[request.room_id or ""]
        request.reported = True

    def forget(self, room_id: str) -> None:
        """The room was left: a later join starts afresh."""
        self._positions.pop(room_id, None)
        self._live.discard(room_id)

    def receive(self, frame: ServerFrame) -> list[Event]:
        match frame:
            case ChatMessage(payload=delivery):
                return self._chat(delivery)
            case Pong():
                return self._pong()
            case Error(payload=body):
                return self._error(chat_error(body.code, body.message, body.msg_id))
            case JoinedFrame(payload=body):
                return self._joined(body)
            case Left():
                return []  # a leave completes at its pong, which follows at once
            case AckFrame(payload=body):
                return self._ack(body)
            case ResyncFrame(payload=body):
                self._positions[body.room_id] = Position(body.epoch, body.offset)
                return [Noted(Resynced(body.room_id, body.epoch, body.offset))]
            case Presence(payload=body):
                return self._presence(body)
            case PresenceJoinFrame(payload=body):
                return [Noted(PresenceJoin(body.room_id, body.user, body.name))]
            case PresenceLeaveFrame(payload=body):
                return [Noted(PresenceLeave(body.room_id, body.user))]

    def lost(self) -> list[Request]:
        """The connection is gone: every request still waiting, oldest first."""
        waiting = list(self._unanswered)
        for joins in self._joining.values():
            waiting.extend(joins)
        for listings in self._listing.values():
            waiting.extend(listings)
        waiting.extend(r for r in self._acks.values() if r not in waiting)
        self._unanswered.clear()
        self._joining.clear()
        self._listing.clear()
        self._acks.clear()
        self._live.clear()
        self.connection_id = None
        return waiting

    def _report(self, request: Request) -> list[Event]:
        request.reported = True
        if request.msg_id is not None:
            self._acks.pop(request.msg_id, None)
        return [Done(request)]

    def _chat(self, delivery: ChatDelivery) -> list[Event]:
        epoch, offset = delivery.epoch, delivery.offset
        if epoch is not None and offset is not None:
            pos = self._positions.get(delivery.room_id)
            if pos is not None and pos.epoch == epoch and offset <= pos.offset:
                self.duplicates += 1
                return []
            if pos is not None:  # none: a room left, whose last chats still arrive
                pos.epoch, pos.offset = epoch, offset
        return [Delivered(delivery)]

    def _pong(self) -> list[Event]:
        if not self._unanswered:
            return []
        request = self._unanswered.popleft()
        if request.reported:
            return []  # already reported when its error or ack arrived
        request.accepted = True
        if request.done:
            return self._report(request)
        if request.kind is Kind.JOIN:
            assert request.room_id is not None
            self._joining.setdefault(request.room_id, []).append(request)
        elif request.kind is Kind.PRESENCE:
            assert request.room_id is not None
            self._listing.setdefault(request.room_id, deque()).append(request)
        return []  # a chat with a msgId waits for its ack (kept in _acks)

    def _error(self, error: ChatError) -> list[Event]:
        if error.msg_id is not None:
            named = self._acks.get(error.msg_id)
            if named is None or named.reported:
                return []  # about a send this connection no longer waits for
            named.error = error
            return self._report(named)
        head = self._unanswered[0] if self._unanswered else None
        if head is None or head.reported:
            return [Stray(error)]
        head.error = error
        return self._report(head)

    def _ack(self, body: AckBody) -> list[Event]:
        request = self._acks.get(body.msg_id)
        if request is None or request.reported:
            return []
        request.ack = body
        return self._report(request)

    def _presence(self, body: PresenceBody) -> list[Event]:
        listing = self._listing.get(body.room_id)
        if listing:
            request = listing.popleft()
            if not listing:
                del self._listing[body.room_id]
            request.listing = body
            return self._report(request)
        # A reply may come before its pong: the oldest such request of the room.
        for request in self._unanswered:
            if (
                request.kind is Kind.PRESENCE
                and request.room_id == body.room_id
                and request.listing is None
                and not request.reported
            ):
                request.listing = body
                return []  # reported at its pong
        return []  # a reply nobody waits for any more

    def _join_for(self, room_id: str) -> Request | None:
        joining = self._joining.get(room_id)
        if joining:
            return joining[0]
        for request in self._unanswered:
            if request.kind is Kind.JOIN and request.room_id == room_id:
                return request
        return None

    def _joined(self, body: JoinedBody) -> list[Event]:
        room_id, connection_id = body.room_id, body.connection_id
        self.connection_id = connection_id
        if room_id not in self._live:
            # A repeated join replays nothing: the stream goes on where it is.
            self._live.add(room_id)
            self._place(body, self._join_for(room_id))
        events: list[Event] = [
            Noted(Joined(room_id, connection_id, body.epoch, body.offset, body.recovered))
        ]
        for request in self._joining.pop(room_id, []):
            request.connection_id = connection_id
            events.extend(self._report(request))
        # A join of a room already live is answered before its pong.
        for request in self._unanswered:
            if request.kind is Kind.JOIN and request.room_id == room_id and request.error is None:
                request.connection_id = connection_id
        return events

    def _place(self, body: JoinedBody, request: Request | None) -> None:
        """Where the stream stands once `joined` arrived: what follows it is new."""
        if body.epoch is None or body.offset is None:
            return  # a v1 edge: nothing to track
        known = self._positions.get(body.room_id)
        if body.recovered:
            # Chats after the position follow: it stays until they arrive.
            if known is None or known.epoch != body.epoch:
                since = request.since if request is not None else None
                start = since[1] if since is not None else body.offset
                self._positions[body.room_id] = Position(body.epoch, start)
            return
        history = request.history if request is not None and request.history else 0
        offset = max(0, body.offset - history)  # replayed history starts after this
        if known is not None and known.epoch == body.epoch:
            offset = max(offset, min(known.offset, body.offset))  # never show a chat twice
        self._positions[body.room_id] = Position(body.epoch, offset)
