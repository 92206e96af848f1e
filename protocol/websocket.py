"""Server side of RFC 6455, sans I/O: the upgrade handshake and a frame parser.

Bytes go in, events come out; nothing here touches a socket. An edge keeps
one small `FrameParser` per connection instead of a full HTTP request,
response, reader, writer and task per connection, which is most of what a
WebSocket costs in memory when thousands sit idle.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 16 * 1024
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


# The upgrade request.


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path) or "/"

    def query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def is_websocket_upgrade(self) -> bool:
        upgrade = self.headers.get("upgrade", "").lower()
        connection = self.headers.get("connection", "").lower()
        tokens = {t.strip() for t in connection.split(",")}
        return self.method == "GET" and upgrade == "websocket" and "upgrade" in tokens


class BadRequest(Exception):
    pass


def parse_request_head(head: bytes) -> Request:
    """Parse an HTTP/1.1 request line and headers (without the final CRLFCRLF)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any bytes
        raise BadRequest("undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    try:
        urlsplit(parts[1])
    except ValueError:
        raise BadRequest("malformed request target") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(parts[0], parts[1], headers)


def http_response(status: int, reason: str, body: str = "", **headers: str) -> bytes:
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(data)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake_refusal(request: Request) -> bytes | None:
    """The HTTP error for a malformed upgrade, or None if it can be accepted."""
    if request.headers.get("sec-websocket-version") != "13":
        return http_response(
            426, "Upgrade Required", "WebSocket version 13 only\n", Sec_WebSocket_Version="13"
        )
    key = request.headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        return http_response(400, "Bad Request", "bad Sec-WebSocket-Key\n")
    return None


def handshake_accept(request: Request) -> bytes:
    """The 101 response; no extensions (compression off keeps frames shareable)."""
    key = request.headers["sec-websocket-key"]
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


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
