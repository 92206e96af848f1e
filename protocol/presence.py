"""What crosses the broker for presence (protocol v2 section 7).

A room's presence has one owner: the room's sequencer, the broker that owns
the room. Edges tell it what their members do, it merges them per user and
publishes `presence_join` and `presence_leave` on the room's topic, ordered
with the room's chats. Nothing here assumes one broker: an edge reports a
room's changes on the room's topic (wherever that room lives) and sends each
owner a heartbeat of the rooms it owns.

Parts of a broker message on a room topic, edge to owner (beside the chats,
probes and queries of `protocol.stream`):

- `P` + msgpack `Report`: one of the edge's connections joined the room,
  left it cleanly (a `leave`, or a close handshake), or dropped abruptly.
  The report carries the user's state on that edge after the change (its
  connection count there, the name of its newest connection there, and how
  many of the edge's members of the room want events): absolute, not a
  delta, so a report lost or repeated is set right by the next one or by the
  next heartbeat. A join report travels the same pipe as the chats, so the
  owner handles it before the user's first chat; a leave report after its
  last.
- `W` + msgpack `WhoQuery`: a member's `presence` request.

Owner to edges, on a room topic:

- `E` + JSON: a `presence_join` or `presence_leave` frame, made once by the
  owner; an edge writes the bytes after the mark, unchanged, to its members
  of the room that joined with `presence: true` (and to no one else).

Owner to an edge's own topic (`protocol.topics.edge_topic`):

- `L` + msgpack `Listing`: the answer to a `WhoQuery`, a whole `presence`
  frame, ready to send. It goes through the same XPUB pipe as the room's
  events, so the listing is exact at its place among them: an event before
  it is counted in it, one after it is not.

Edge to owner, on `HEARTBEAT_TOPIC`:

- `M` + msgpack `Heartbeat`: the edge's whole membership in the rooms that
  owner owns, every `HEARTBEAT_EVERY` seconds (the edge's
  `--presence-heartbeat`), in one or more parts (whole rooms per part,
  `heartbeat_parts`). It keeps the edge alive at the owner,
  lets an owner that restarted rebuild presence without anybody seeing a
  leave or a join again, and sets right whatever reports were lost. The
  edge sends heartbeats through the same socket as its reports, so the
  owner sees both in the order they were sent.

An edge is named twice: `edge` (stable across restarts: its configured name,
or host:port) and `incarnation` (new at every start: its instance id). A new
incarnation of an edge replaces everything the old one reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import IntEnum

import msgspec

REPORT_MARK = b"P"
WHO_MARK = b"W"
EVENT_MARK = b"E"
LISTING_MARK = b"L"
HEARTBEAT_MARK = b"M"
PRESENCE_MARKS = frozenset({REPORT_MARK, WHO_MARK})  # owner's parts on a room topic
# Kind `p`: no room topic (`r`) or edge topic (`e`) starts with it, so no
# subscription of an edge ever matches it; the broker reads it, nobody
# receives it.
HEARTBEAT_TOPIC = b"p\x00"

HEARTBEAT_EVERY = 2.0  # seconds between an edge's heartbeats, by default
# An owner takes an edge that missed three heartbeats for dead (its
# --presence-edge-timeout, by default).
EDGE_TIMEOUT = 3 * HEARTBEAT_EVERY
# A part holds whole rooms, and at most this many users unless one room
# alone has more; the owner reconciles a part in one go, and the broker's
# loop serves chats between parts.
HEARTBEAT_PART_USERS = 5000


class Change(IntEnum):
    JOINED = 1  # a connection joined the room
    LEFT = 2  # one left it cleanly: a `leave`, or a close handshake
    DROPPED = 3  # one dropped abruptly (no close handshake, missed heartbeats)


class Report(msgspec.Struct, array_like=True):
    """A change of one connection's membership, and the user's state after it on its edge."""

    edge: str
    incarnation: str
    change: Change
    room_id: str
    user: str
    connection_id: str
    count: int  # the user's connections in the room on this edge, after the change
    name: str  # the name of the user's newest connection in the room on this edge
    watchers: int  # the edge's members of the room with presence events on, after it


class RoomMembers(msgspec.Struct, array_like=True):
    """One room at one edge: user -> (connections, name of the newest one)."""

    room_id: str
    watchers: int
    users: dict[str, tuple[int, str]]


class Heartbeat(msgspec.Struct, array_like=True):
    """Part `part` (0-based) of `parts` of an edge's heartbeat number `round`."""

    edge: str
    incarnation: str
    round: int
    part: int
    parts: int
    rooms: list[RoomMembers]


class WhoQuery(msgspec.Struct, array_like=True):
    origin: bytes  # the topic the listing goes to: the asking edge's
    request_id: int
    room_id: str
    cursor: str | None  # the `next` of the page before; None: the first page


class Listing(msgspec.Struct, array_like=True):
    request_id: int
    room_id: str
    frame: bytes  # the `presence` frame for the client, as it is sent


_pack = msgspec.msgpack.Encoder()
_report = msgspec.msgpack.Decoder(Report)
_heartbeat = msgspec.msgpack.Decoder(Heartbeat)
_who = msgspec.msgpack.Decoder(WhoQuery)
_listing = msgspec.msgpack.Decoder(Listing)


def is_presence_part(part: bytes) -> bool:
    """A part on a room topic that the presence owner handles, not the sequencer."""
    return part[:1] in PRESENCE_MARKS


def report_part(report: Report) -> bytes:
    return REPORT_MARK + _pack.encode(report)


def read_report(part: bytes) -> Report:
    """Raises msgspec.DecodeError / ValidationError on a malformed part (so do all read_*)."""
    return _report.decode(memoryview(part)[1:])


def who_part(query: WhoQuery) -> bytes:
    return WHO_MARK + _pack.encode(query)


def read_who(part: bytes) -> WhoQuery:
    return _who.decode(memoryview(part)[1:])


def listing_part(listing: Listing) -> bytes:
    return LISTING_MARK + _pack.encode(listing)


def read_listing(part: bytes) -> Listing:
    return _listing.decode(memoryview(part)[1:])


def event_part(frame: bytes) -> bytes:
    """A `presence_join` or `presence_leave` frame as it travels on the room's topic."""
    return EVENT_MARK + frame


def event_frame(part: bytes) -> bytes:
    """The frame an edge sends its watching members, from an event part."""
    return part[1:]


def heartbeat_part(heartbeat: Heartbeat) -> bytes:
    return HEARTBEAT_MARK + _pack.encode(heartbeat)


def read_heartbeat(part: bytes) -> Heartbeat:
    return _heartbeat.decode(memoryview(part)[1:])


def heartbeat_parts(
    edge: str,
    incarnation: str,
    round_no: int,
    rooms: Iterable[RoomMembers],
    part_users: int = HEARTBEAT_PART_USERS,
) -> list[bytes]:
    """An edge's heartbeat for one owner, split into parts of whole rooms.

    At least one part, also for an edge with no members: the heartbeat is
    what keeps the edge alive at the owner, and its last part tells the
    owner the edge holds no other room.
    """
    chunks = list(_chunks(rooms, part_users)) or [[]]
    total = len(chunks)
    return [heartbeat_part(Heartbeat(edge, incarnation, round_no, i, total, chunk))
            for i, chunk in enumerate(chunks)]


def _chunks(rooms: Iterable[RoomMembers], part_users: int) -> Iterator[list[RoomMembers]]:
    chunk: list[RoomMembers] = []
    users = 0
    for room in rooms:
        if chunk and users + len(room.users) > part_users:
            yield chunk
            chunk, users = [], 0
        chunk.append(room)
        users += len(room.users)
    if chunk:
        yield chunk
