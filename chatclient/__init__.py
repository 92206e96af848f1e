"""Clients of roomcast: an asyncio WebSocket client, and a publisher that posts into
rooms through the broker without a WebSocket."""

from chatclient.backoff import Backoff
from chatclient.client import ChatClient, Connected, Disconnected, Status, connect
from chatclient.core import (
    Joined,
    Listing,
    Member,
    PresenceEvent,
    PresenceJoin,
    PresenceLeave,
    Resynced,
    StreamEvent,
)
from chatclient.errors import (
    BadJson,
    ChatError,
    ClientClosed,
    ClientError,
    ConnectionLost,
    Forbidden,
    InvalidPayload,
    NotInRoom,
    RateLimited,
    RoomRequired,
    TooManyRooms,
    Unauthorized,
    Unavailable,
    UnknownType,
)
from chatclient.publisher import Publisher
from chatclient.roster import Roster
from protocol.messages import AckBody as Ack
from protocol.messages import ChatDelivery

__all__ = [
    "Ack",
    "Backoff",
    "BadJson",
    "ChatClient",
    "ChatDelivery",
    "ChatError",
    "ClientClosed",
    "ClientError",
    "Connected",
    "ConnectionLost",
    "Disconnected",
    "Forbidden",
    "InvalidPayload",
    "Joined",
    "Listing",
    "Member",
    "NotInRoom",
    "PresenceEvent",
    "PresenceJoin",
    "PresenceLeave",
    "Publisher",
    "RateLimited",
    "Resynced",
    "RoomRequired",
    "Roster",
    "Status",
    "StreamEvent",
    "TooManyRooms",
    "Unauthorized",
    "Unavailable",
    "UnknownType",
    "connect",
]
