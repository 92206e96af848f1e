"""Server side of RFC 6455 framing, sans I/O: a frame parser.

Bytes go in, events come out; nothing here touches a socket. An edge keeps
one small `FrameParser` per connection instead of a full HTTP request,
response, reader, writer and task per connection, which is most of what a
WebSocket costs in memory when thousands sit idle.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

FRAGMENT_COST = 64

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
# Codes a peer may not send in a close frame (RFC 6455 section 7.4).
_RESERVED_CLOSE = frozenset({1004, 1005, 1006, 1015})


# Frames from a client.


class Message(NamedTuple):
    """A complete data message (fragments joined)."""

    opcode: int  # OP_TEXT or OP_BINARY
    data: bytes


class Control(NamedTuple):
    opcode: int  # OP_PING, OP_PONG or OP_CLOSE
    data: bytes


class Violation(NamedTuple):
    """The peer broke the protocol: close with `code`, then drop the connection."""

    code: int
    reason: str


Event = Message | Control | Violation


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    # XOR as one big integer: done in C, no Python loop per byte.
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ mask).to_bytes(n, "little")


class FrameParser:
    """Feed bytes, get events. One per connection; small on purpose."""

    __slots__ = ("_buffer", "_fragments", "_fragments_size", "_message_opcode", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._message_opcode = 0

    def feed(self, data: bytes) -> list[Event]:
        buf = self._buffer + data if self._buffer else data
        events: list[Event] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                header = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                header = 10
            if first & 0x70:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if not second & 0x80:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            if length > self.max_size:
                return self._fail(events, CLOSE_TOO_BIG, "frame too big")
            total = header + 4 + length
            if end - pos < total:
                break
            key = buf[pos + header : pos + header + 4]
            payload = unmask(buf[pos + header + 4 : pos + total], key)
            pos += total
            event = self._frame(first & 0x80 != 0, first & 0x0F, payload)
            if event is not None:
                events.append(event)
                if isinstance(event, Violation):
                    self._buffer = b""
                    return events
        self._buffer = buf[pos:] if pos < end else b""
        return events

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                return Violation(CLOSE_PROTOCOL_ERROR, "bad control frame")
            if opcode == OP_CLOSE:
                return _close_event(payload)
            if opcode in (OP_PING, OP_PONG):
                return Control(opcode, payload)
            return Violation(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                return Violation(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            return self._append(fin, payload)
        if opcode not in (OP_TEXT, OP_BINARY):
            return Violation(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        if self._fragments is not None:
            return Violation(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        if fin:
            return Message(opcode, payload)
        self._message_opcode = opcode
        self._fragments = []
        self._fragments_size = 0
        return self._append(fin, payload)

    def _append(self, fin: bool, payload: bytes) -> Event | None:
        assert self._fragments is not None
        # Every fragment costs at least FRAGMENT_COST: a message of a million
        # empty continuation frames is as "big" as one of real bytes.
        self._fragments_size += len(payload) + FRAGMENT_COST
        if self._fragments_size > self.max_size:
            return Violation(CLOSE_TOO_BIG, "message too big")
        self._fragments.append(payload)
        if not fin:
            return None
        data = b"".join(self._fragments)
        self._fragments = None
        return Message(self._message_opcode, data)

    def _fail(self, events: list[Event], code: int, reason: str) -> list[Event]:
        self._buffer = b""
        events.append(Violation(code, reason))
        return events


def _close_event(payload: bytes) -> Event:
    if len(payload) == 1:
        return Violation(CLOSE_PROTOCOL_ERROR, "bad close frame")
    if len(payload) >= 2:
        code = struct.unpack("!H", payload[:2])[0]
        if code < 1000 or code in _RESERVED_CLOSE or 1016 <= code < 3000 or code >= 5000:
            return Violation(CLOSE_PROTOCOL_ERROR, "bad close code")
        try:
            payload[2:].decode()
        except UnicodeDecodeError:
            return Violation(CLOSE_INVALID_DATA, "close reason is not UTF-8")
    return Control(OP_CLOSE, payload)


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
