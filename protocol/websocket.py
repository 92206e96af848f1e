"""The server side of one RFC 6455 connection after the handshake, sans I/O.

`ServerConnection` owns everything that decides what a WebSocket does next:
its state (open, closing, closed), the frame parser, the close handshake both
ways, answering pings, the heartbeat's silence check, the size limit and
UTF-8 validation. Bytes go in through `receive_data`, events come out, and
the bytes it must send wait in `data_to_send()`. It never touches a socket:
`edge.connection` feeds it and writes what it returns, and every transition
is tested without one. Bytes in the input's order (pongs) come back as
`Send` events among the others; bytes due to the server's own actions
(heartbeat pings, close frames) wait in `data_to_send()`.

Frames the server fans out (chats) are not built here: they are the same
bytes for every member, built once by `protocol.frames`, and the shell
writes them only while `state is State.OPEN`.

Every check that needs only a frame's header (reserved bits, opcode, mask,
control frame length, length encoding, size limit, fragment sequence) runs
as soon as the header is in, before any of its payload is buffered.
"""

from __future__ import annotations

import codecs
import struct
from enum import Enum, IntEnum, auto
from typing import NamedTuple

from protocol.frames import PING_FRAME, apply_mask, close_frame, pong_frame

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MAX_CONTROL_PAYLOAD = 125
# A message may arrive in at most this many fragments. Fragments are joined
# into one buffer as they come, so their number costs no memory; the cap
# bounds the work a peer can make us do without ever finishing a message.
MAX_FRAGMENTS = 4096


class CloseCode(IntEnum):
    """Close codes this server sends (RFC 6455 section 7.4.1, and ours from 4000)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the edge is shutting down
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007  # a text message that is not UTF-8
    POLICY_VIOLATION = 1008  # still flooding after being rate limited
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013  # too slow: the outbox overflowed
    TOKEN_EXPIRED = 4001


# Codes a peer may send in a close frame: the registered ones (RFC 6455
# section 7.4.1 and the IANA registry) except those reserved for reporting a
# close that had no frame, and the range 3000-4999 left to libraries and apps.
_SENDABLE_REGISTERED = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014})


def valid_close_code(code: int) -> bool:
    return code in _SENDABLE_REGISTERED or 3000 <= code <= 4999


class State(Enum):
    OPEN = auto()
    CLOSING = auto()  # we sent a close frame and wait for the peer's
    CLOSED = auto()  # both close frames exchanged, or the connection failed


# The states as plain module constants: reading `State.OPEN` goes through the
# Enum metaclass on every access (about 200 ns on CPython 3.11), and the
# fan-out asks once per member per batch.
OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED


# Events.


class TextMessage(NamedTuple):
    """A complete text message (fragments joined); `data` is valid UTF-8."""

    data: bytes


class BinaryMessage(NamedTuple):
    data: bytes


class Send(NamedTuple):
    """Bytes the server must send at this point of the stream (a pong).

    In the event list rather than in `data_to_send`, so that answers keep
    the order of what they answer: a pong for a ping that came between two
    messages goes out between the replies to those messages.
    """

    data: bytes


class CloseReceived(NamedTuple):
    """The peer started the close handshake; the answering close is in `data_to_send`."""

    code: int | None  # None: a close frame without a status code
    reason: str


class Failed(NamedTuple):
    """The peer broke the protocol: a close frame with `code` is queued, nothing more is read."""

    code: CloseCode
    reason: str


Event = TextMessage | BinaryMessage | Send | CloseReceived | Failed


class ProtocolFault(Exception):
    """Raised inside the parser; becomes a `Failed` event, never leaves this module."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class ServerConnection:
    """One client's WebSocket, as a state machine. Small on purpose: an edge holds thousands."""

    __slots__ = (
        "_buffer",
        "_fragment_count",
        "_fragments",
        "_message_opcode",
        "_outgoing",
        "_silent",
        "_utf8",
        "max_message_bytes",
        "state",
    )

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.state = OPEN
        # Unparsed input: b"" when empty (shared, free), a bytearray while a
        # frame is incomplete, so each read appends instead of copying it all.
        self._buffer: bytes | bytearray = b""
        self._fragments: bytearray | None = None  # the message being reassembled
        self._fragment_count = 0
        self._message_opcode = 0
        self._utf8: codecs.IncrementalDecoder | None = None  # checks a fragmented text
        self._outgoing = b""
        self._silent = False  # nothing received since the last heartbeat

    # Bytes in, events out.

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; return what they mean."""
        if not data:
            return []
        self._silent = False
        if self._closed():
            return []  # read and dropped: unread input would turn the close into a reset
        buffer = self._buffer
        view: bytes | bytearray = data
        if isinstance(buffer, bytearray):
            buffer += data  # in place: no copy of what was already buffered
            view = buffer
        events: list[Event] = []
        try:
            consumed = self._parse(view, events)
        except ProtocolFault as fault:
            self._fail(fault, events)
            return events
        if self._closed():
            self._release()
        elif consumed == len(view):
            self._buffer = b""
        elif isinstance(buffer, bytearray):
            del buffer[:consumed]  # bytearray drops its head without moving the rest
        else:
            self._buffer = bytearray(view[consumed:])
        return events

    def can_send(self) -> bool:
        """May the server still write data frames?

        Until our close frame has been taken by `data_to_send`: replies to
        messages that arrived in the same read as the peer's close frame go
        out before our answering close, which is the order they were asked in.
        """
        # Once not open, nothing but the close frame is ever queued.
        return self.state is OPEN or bool(self._outgoing)

    def data_to_send(self) -> bytes:
        """Bytes this connection must send (heartbeat pings, close frames); taken once."""
        out, self._outgoing = self._outgoing, b""
        return out

    # Actions of the server.

    def send_close(self, code: int, reason: str = "") -> None:
        """Start the close handshake. Nothing else may be sent after it."""
        if self.state is not OPEN:
            return
        self._outgoing += close_frame(code, reason)
        self.state = CLOSING
        self._fragments = None
        self._utf8 = None

    def heartbeat(self) -> bool:
        """Called once per heartbeat interval: queue a ping.

        False if nothing at all arrived since the previous call (not even a
        pong): the peer is gone, and the connection should be dropped.
        """
        if self._silent:
            return False
        self._silent = True
        if self.state is OPEN:
            self._outgoing += PING_FRAME
        return True

    def _closed(self) -> bool:
        return self.state is CLOSED

    # The parser.

    def _parse(self, buf: bytes | bytearray, events: list[Event]) -> int:
        """Handle every complete frame in `buf`; return how many bytes were used."""
        pos = 0
        end = len(buf)
        while end - pos >= 2 and self.state is not CLOSED:
            first = buf[pos]
            second = buf[pos + 1]
            opcode = first & 0x0F
            fin = first & 0x80
            self._check_header(first, second, opcode, fin)
            length = second & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                if length < 126:
                    raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "length not in minimal form")
                header = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                if length >> 63:
                    raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "length with its top bit set")
                if length < 65536:
                    raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "length not in minimal form")
                header = 10
            if opcode < 0x8:
                so_far = len(self._fragments) if self._fragments is not None else 0
                if so_far + length > self.max_message_bytes:
                    raise ProtocolFault(CloseCode.MESSAGE_TOO_BIG, "message too big")
            total = header + 4 + length
            if end - pos < total:
                break
            key = buf[pos + header : pos + header + 4]
            payload = apply_mask(buf[pos + header + 4 : pos + total], key)
            pos += total
            if opcode >= 0x8:
                self._control(opcode, payload, events)
            elif self.state is OPEN:
                self._data(opcode, bool(fin), payload, events)
            # CLOSING: data frames still in flight from the peer are dropped.
        return pos

    def _check_header(self, first: int, second: int, opcode: int, fin: int) -> None:
        if first & 0x70:
            raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        if opcode >= 0x8:
            if opcode > OP_PONG:
                raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "unknown opcode")
            if not fin:
                raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if second & 0x7F > MAX_CONTROL_PAYLOAD:
                raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")
            return
        if opcode > OP_BINARY:
            raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "unknown opcode")
        if opcode == OP_CONTINUATION:
            if self._fragments is None and self.state is OPEN:
                raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "continuation without a message")
        elif self._fragments is not None:
            raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")

    def _data(self, opcode: int, fin: bool, payload: bytes, events: list[Event]) -> None:
        if opcode != OP_CONTINUATION:
            if fin:  # the common case: a whole message in one frame
                if opcode == OP_TEXT:
                    _check_utf8(payload)
                    events.append(TextMessage(payload))
                else:
                    events.append(BinaryMessage(payload))
                return
            self._message_opcode = opcode
            self._fragments = bytearray()
            self._fragment_count = 0
            self._utf8 = _Utf8Decoder() if opcode == OP_TEXT else None
        fragments = self._fragments
        assert fragments is not None
        self._fragment_count += 1
        if self._fragment_count > MAX_FRAGMENTS:
            raise ProtocolFault(CloseCode.MESSAGE_TOO_BIG, "message in too many fragments")
        if self._utf8 is not None:
            try:  # incrementally: invalid bytes fail the fragment that carries them
                self._utf8.decode(payload, bool(fin))
            except UnicodeDecodeError:
                raise ProtocolFault(CloseCode.INVALID_DATA, "text is not valid UTF-8") from None
        fragments += payload
        if not fin:
            return
        data = bytes(fragments)
        self._fragments = None
        self._utf8 = None
        events.append(
            TextMessage(data) if self._message_opcode == OP_TEXT else BinaryMessage(data)
        )

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == OP_PING:
            if self.state is OPEN:
                events.append(Send(pong_frame(payload)))
        elif opcode == OP_CLOSE:
            code, reason = _parse_close(payload)
            if self.state is OPEN:
                # Echo the peer's code (RFC 6455 section 5.5.1), or 1000 if it gave none.
                self._outgoing += close_frame(CloseCode.NORMAL if code is None else code, "")
                events.append(CloseReceived(code, reason))
            self.state = CLOSED
        # A pong needs nothing: receiving it already ended the silence.

    def _fail(self, fault: ProtocolFault, events: list[Event]) -> None:
        if self.state is OPEN:
            self._outgoing += close_frame(fault.code, fault.reason)
            events.append(Failed(fault.code, fault.reason))
        self.state = CLOSED
        self._release()

    def _release(self) -> None:
        self._buffer = b""
        self._fragments = None
        self._utf8 = None


def _check_utf8(payload: bytes) -> None:
    if not payload.isascii():
        try:
            payload.decode()
        except UnicodeDecodeError:
            raise ProtocolFault(CloseCode.INVALID_DATA, "text is not valid UTF-8") from None


def _parse_close(payload: bytes) -> tuple[int | None, str]:
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "close frame of one byte")
    code = struct.unpack_from("!H", payload)[0]
    if not valid_close_code(code):
        raise ProtocolFault(CloseCode.PROTOCOL_ERROR, "invalid close code")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolFault(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


def close_code(payload: bytes) -> int | None:
    """The status code in a close frame's payload, if it has one (for clients and tests)."""
    return struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
