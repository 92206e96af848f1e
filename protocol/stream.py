"""What crosses the broker for sequenced rooms (protocol v2 sections 1 to 6).

A room's sequencer (its broker) gives every chat the next offset of the
room's stream and stamps `"epoch"` and `"offset"` onto the chat's JSON, as
the payload's last two fields, without decoding it: a chat encoded by
`protocol.codec.encode_chat` ends with `}}`, and the stamp goes before them.
Every edge forwards the stamped bytes unchanged, so one chat has the same
epoch and offset at every member.

Parts of a broker message on a room topic, edge to broker:

- chats without a msgId (first byte `{`): one chat's JSON, or several
  joined by a newline. JSON as `msgspec` writes it has no raw newline (in a
  string it is `\\n`), so the newline needs no escaping, and a burst of a
  room's chats costs one ZeroMQ frame instead of one per chat at the
  publisher, the broker and every edge (`pack`, `unpack`);
- `!` + msgpack `[origin, key, json]`: a chat with a msgId. `key` is what the
  room's dedupe window remembers (the msgId, scoped by user when tokens are
  on); `origin` is the topic on which the sender's edge hears acks;
- a probe (first byte `?`, see `protocol.topics`), which the sequencer
  stamps with the room's epoch and top as it passes, so that the probe
  marks a point in the stream: every chat after it has a higher offset.

- `H` + msgpack `HistoryQuery`: a request for some of the room's history.

Broker to edges, on a room topic: the stamped chats, packed the same way,
and the probes.

Broker to an edge's own topic (the edge subscribes to it for its probes):

- `A` + msgpack `AckNote`, one per chat with a msgId, once it is sequenced
  (or found to be a duplicate);
- `R` + msgpack `HistoryReply`, the answer to a `HistoryQuery`.

History queries travel the same pipes as the chats, on purpose: the broker
answers a query at its place in the room's stream, and the reply reaches
the edge through the same XPUB pipe as the room's chats, in the order the
broker sent them. So when a reply with top T arrives, every chat up to T
has arrived before it and every later chat comes after it: merging a replay
with the live stream needs no guessing (the zguide's Clone pattern, with
the snapshot in the update stream). No third socket or endpoint is needed,
per broker or per shard.
"""

from __future__ import annotations

import msgspec

MSGID_MARK = b"!"
QUERY_MARK = b"H"
ACK_MARK = b"A"
REPLY_MARK = b"R"
_STAMP_HEAD = b',"epoch":"'
_STAMP_MID = b'","offset":'

_pack = msgspec.msgpack.Encoder()
CHAT_SEPARATOR = b"\n"


def pack(chats: list[bytes]) -> bytes:
    """Several chats' JSON as one part (see the module docstring)."""
    return CHAT_SEPARATOR.join(chats)


def unpack(part: bytes) -> list[bytes]:
    return part.split(CHAT_SEPARATOR)


def stamp_head(epoch: bytes) -> bytes:
    """What goes between a chat's payload and its offset; made once per stream."""
    return _STAMP_HEAD + epoch + _STAMP_MID


def stamp(body: bytes, epoch: bytes, offset: int) -> bytes:
    """A chat's JSON with its epoch and offset added as the payload's last fields."""
    return b"%s%s%d}}" % (body[:-2], stamp_head(epoch), offset)


def read_stamp(body: bytes) -> tuple[bytes, int] | None:
    """(epoch, offset) of a stamped chat, read from its tail; None if it has none."""
    head = body.rfind(_STAMP_HEAD)
    if head < 0:
        return None
    mid = body.find(_STAMP_MID, head)
    if mid < 0:
        return None
    try:
        return body[head + len(_STAMP_HEAD) : mid], int(body[mid + len(_STAMP_MID) : -2])
    except ValueError:
        return None


class KeyedChat(msgspec.Struct, array_like=True):
    """A chat with a msgId, on its way to the sequencer."""

    origin: bytes  # the topic its edge hears acks on
    key: str  # the dedupe key: msgId, scoped by user when tokens are on
    body: bytes  # the chat's JSON, as for a chat without msgId


class AckNote(msgspec.Struct, array_like=True, omit_defaults=True):
    """The sequencer's answer to a keyed chat, sent to its origin edge."""

    room_id: str
    key: str
    epoch: str
    offset: int
    duplicate: bool
    # The chat was not sequenced: the broker could not store it (its disk is
    # full, say). Nothing was delivered; the sender should send it again.
    refused: bool = False


_keyed = msgspec.msgpack.Decoder(KeyedChat)
_ack = msgspec.msgpack.Decoder(AckNote)


def keyed_part(origin: bytes, key: str, body: bytes) -> bytes:
    return MSGID_MARK + _pack.encode(KeyedChat(origin, key, body))


def read_keyed(part: bytes) -> KeyedChat:
    """Raises msgspec.DecodeError / ValidationError on a malformed part."""
    return _keyed.decode(memoryview(part)[1:])


def ack_part(note: AckNote) -> bytes:
    return ACK_MARK + _pack.encode(note)


def read_ack(part: bytes) -> AckNote:
    return _ack.decode(memoryview(part)[1:])


def dedupe_key(msg_id: str, user: str | None) -> str:
    """The dedupe scope: the room (and so the key alone), plus the user when tokens are on.

    One user cannot suppress another's message; in open mode anyone in the
    room who guesses a msgId can (protocol v2 section 5).
    """
    return msg_id if user is None else f"{user}\x00{msg_id}"


# History and recovery: a query on the room's topic, its reply on the edge's.


class HistoryQuery(msgspec.Struct, array_like=True):
    """Chats of `room_id` with `after < offset <= upto`, at most `limit`, newest kept.

    `epoch`: the chats are wanted only from this epoch (None: whatever the
    room's current epoch is). `upto`: None for the room's top.
    """

    origin: bytes  # the topic the reply goes to
    request_id: int
    room_id: str
    epoch: str | None
    after: int
    upto: int | None
    limit: int


class HistoryReply(msgspec.Struct, array_like=True):
    """`complete`: every chat asked for (within `limit`) is in `chats`, oldest first."""

    request_id: int
    room_id: str
    epoch: str
    top: int
    complete: bool
    chats: list[bytes]


_query = msgspec.msgpack.Decoder(HistoryQuery)
_reply = msgspec.msgpack.Decoder(HistoryReply)


def query_part(query: HistoryQuery) -> bytes:
    return QUERY_MARK + _pack.encode(query)


def read_query(part: bytes) -> HistoryQuery:
    return _query.decode(memoryview(part)[1:])


def reply_part(reply: HistoryReply) -> bytes:
    return REPLY_MARK + _pack.encode(reply)


def read_reply(part: bytes) -> HistoryReply:
    return _reply.decode(memoryview(part)[1:])
