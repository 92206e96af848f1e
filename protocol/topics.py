"""Topic framing and the envelope that crosses the broker.

Every broker message is `[topic, body, ...]`: a topic frame, then one or
more body frames for that topic (an edge publishes a burst of chats into one
room as one message).

ZeroMQ matches subscriptions by byte prefix, so a bare room id would let a
subscriber of `r1` also receive `r10`. Topics are therefore framed: a kind
byte, the UTF-8 room id, and a NUL terminator. Room ids cannot contain NUL
(it is a control character), so no room topic is a prefix of another.

The body is either a chat frame exactly as members receive it (a JSON
object, so its first byte is `{`), or a probe (first byte `?`) that an edge
publishes to check that a path through the broker is live.
"""

from __future__ import annotations

from typing import NamedTuple

ROOM_KIND = b"r"
EDGE_KIND = b"e"
TERMINATOR = b"\x00"
PROBE_MARK = b"?"
PROBE_MARK_BYTE = PROBE_MARK[0]


def room_topic(room_id: str) -> bytes:
    return ROOM_KIND + room_id.encode() + TERMINATOR


def edge_topic(edge_id: str) -> bytes:
    """Topic on which an edge sends health probes to itself."""
    return EDGE_KIND + edge_id.encode() + TERMINATOR


def room_of_topic(topic: bytes) -> str | None:
    """The room id of a room topic; None for any other topic, or bytes that are not one."""
    if topic[:1] != ROOM_KIND or topic[-1:] != TERMINATOR:
        return None
    try:
        return topic[1:-1].decode()
    except UnicodeDecodeError:
        return None


def probe_body(edge_id: str, token: int, shards: int | None = None) -> bytes:
    """`shards`: on a health probe, the number of broker shards the sender counts,
    so that a broker counting another can refuse it (`/N` after the token)."""
    if shards is None:
        return PROBE_MARK + f"{edge_id} {token}".encode()
    return PROBE_MARK + f"{edge_id} {token} /{shards}".encode()


def is_probe(body: bytes) -> bool:
    return body[:1] == PROBE_MARK


class Probe(NamedTuple):
    edge_id: str
    token: int
    # Stamped by a room's sequencer as the probe passes: the room's stream at
    # that point (every chat after the probe has a higher offset).
    epoch: str | None = None
    top: int | None = None
    shards: int | None = None  # a health probe's count of broker shards, when it says


def stamp_probe(body: bytes, epoch: bytes, top: int) -> bytes:
    return b"%s %s %d" % (body, epoch, top)


def parse_probe(body: bytes) -> Probe | None:
    """The fields of a probe body, or None if it is malformed."""
    try:
        fields = body[1:].decode().split(" ")
        shards = None
        if len(fields) == 3 and fields[2][:1] == "/":
            shards = int(fields.pop()[1:])
        if len(fields) == 2:
            edge_id, token = fields
            epoch, top = None, None
        elif len(fields) == 4:
            edge_id, token, epoch, top_text = fields
            top = int(top_text)
        else:
            return None
        if not token.lstrip("-").isdigit():
            return None
        return Probe(edge_id, int(token), epoch, top, shards)
    except (UnicodeDecodeError, ValueError):
        return None
