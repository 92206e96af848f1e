"""ZMTP 3.0 with the NULL mechanism, sans I/O: what an edge says to a broker's libzmq sockets.

The broker's XSUB and XPUB are libzmq sockets, and any ZMTP peer may
connect to them. An edge that speaks ZMTP itself, on its own event loop,
saves libzmq's I/O thread: with pyzmq every message wakes that thread on
the way out and again on the way in before the event loop sees it, and at
a moderate chat rate those wake-ups are most of a chat's latency
(docs/benchmarks.md, "Where a chat's latency goes").

`Peer` holds one connection's parsing state and makes the bytes to send;
the caller owns the socket. The greeting says version 3.0 so that libzmq
keeps the classic pub-sub framing: subscriptions are data frames whose
first byte is 1 (subscribe) or 0 (cancel), not 3.1's SUBSCRIBE command.
Heartbeats are 3.1's PING and PONG commands, which libzmq sends and
answers on any ZMTP 3 connection. See https://rfc.zeromq.org/spec/23/ and
/spec/37/.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"
GREETING_SIZE = 64
_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_SHORT_MAX = 255
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_PING_TTL = b"\x00\x00"  # no time-to-live asked of the peer: its own timeout rules
MAX_FRAME = 64 * 1024 * 1024  # a frame longer than this is a broken peer, not a message


def address(endpoint: str, *, bind: bool = False) -> tuple[str, int] | str | None:
    """(host, port) for tcp://, a path for ipc://; None for what only libzmq handles.

    That is inproc://, Linux's abstract ipc://@ names (uvloop cannot use a
    path that starts with a NUL byte), a source address ("src;dst"), a
    wildcard port and, to bind, an interface name (libzmq binds "eth0"; a
    resolver would not know it). To bind, "*" is every IPv4 address, as
    with libzmq.
    """
    transport, _, rest = endpoint.partition("://")
    if transport == "ipc":
        return None if rest.startswith("@") or not rest else rest
    if transport != "tcp" or ";" in rest:
        return None
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit() or not host:
        return None
    host = host.removeprefix("[").removesuffix("]")
    if host == "*":
        return ("0.0.0.0", int(port)) if bind else None
    if bind and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
    return host, int(port)


class ZmtpError(Exception):
    """The peer broke the protocol (or refused us): the connection must be closed."""


def greeting() -> bytes:
    """Our greeting: ZMTP 3.0, NULL mechanism, the client side."""
    return SIGNATURE + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31


def _command(name: bytes, data: bytes = b"") -> bytes:
    body = bytes((len(name),)) + name + data
    return _frame_header(len(body), _COMMAND) + body


def _frame_header(size: int, flags: int) -> bytes:
    if size <= _SHORT_MAX:
        return bytes((flags, size))
    return bytes((flags | _LONG,)) + _U64.pack(size)


def ready(socket_type: bytes) -> bytes:
    """The NULL mechanism's READY command, naming our socket type (PUB or SUB)."""
    name = b"Socket-Type"
    metadata = bytes((len(name),)) + name + _U32.pack(len(socket_type)) + socket_type
    return _command(b"READY", metadata)


def ping(context: bytes = b"") -> bytes:
    return _command(b"PING", _PING_TTL + context)


def pong(context: bytes) -> bytes:
    return _command(b"PONG", context)


def message(parts: list[bytes]) -> bytes:
    """One multipart message as frames, ready to write."""
    return b"".join(frames(parts))


def frames(parts: list[bytes]) -> list[bytes]:
    """A message's frames as pieces (a header, then its part, for each part): pieces of
    many messages joined once make one write without copying each part twice."""
    out: list[bytes] = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        size = len(part)
        more = _MORE if i < last else 0
        if size <= _SHORT_MAX:
            out.append(bytes((more, size)))
        else:
            out.append(bytes((more | _LONG,)) + _U64.pack(size))
        out.append(part)
    return out


def subscription(topic: bytes, subscribe: bool) -> bytes:
    """A SUB's subscribe (or cancel) for a topic prefix, as ZMTP 3.0 frames it."""
    return message([(b"\x01" if subscribe else b"\x00") + topic])


@dataclass(slots=True)
class Ping:
    """The peer asks whether we are alive: answer `pong(context)`."""
    context: bytes


@dataclass(slots=True)
class Ready:
    """The peer's handshake is done: messages may flow."""
    socket_type: bytes


class Peer:
    """What one connection has received so far, parsed into messages and commands.

    `receive(data)` returns the complete messages (each a list of parts) and
    the commands that need an answer, in arrival order; bytes of an
    incomplete frame wait for the next call. Raises ZmtpError on anything a
    ZMTP 3 peer with the NULL mechanism would not send.
    """

    __slots__ = ("_buffer", "_greeted", "_need", "_parts", "_ready")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need = 0  # bytes `_buffer` must hold before parsing can go on
        self._greeted = False
        self._ready = False
        self._parts: list[bytes] = []  # frames of a message not yet complete

    @property
    def ready(self) -> bool:
        return self._ready

    def receive(self, data: bytes) -> list[list[bytes] | Ping | Ready]:
        # Most reads hold whole frames: they are parsed straight from `data`.
        # The start of a frame not yet complete waits in `_buffer` until
        # `_need` bytes are there; only the bytes that complete it are
        # taken from the next read (appended: a long frame is not copied
        # again with every read), and the rest of that read is parsed in place.
        out: list[list[bytes] | Ping | Ready] = []
        pos = 0
        buffer = self._buffer
        while buffer:
            missing = self._need - len(buffer)
            if len(data) - pos < missing:
                buffer += data[pos:] if pos else data
                return out
            buffer += data[pos:pos + missing]
            pos += missing
            held = bytes(buffer)
            buffer.clear()
            self._parse(held, 0, out)  # may keep a tail of it again
        self._parse(data, pos, out)
        return out

    def _parse(self, data: bytes, pos: int, out: list[list[bytes] | Ping | Ready]) -> None:
        """Parse data[pos:] into `out`; keep the start of an incomplete frame."""
        end = len(data)
        if not self._greeted:
            if end - pos < GREETING_SIZE:
                self._check_signature(data[pos:pos + 1])
                self._keep(data, pos, pos + GREETING_SIZE)
                return
            self._check_greeting(data[pos:pos + GREETING_SIZE])
            self._greeted = True
            pos += GREETING_SIZE
        parts = self._parts
        while True:
            if pos + 2 > end:
                self._keep(data, pos, pos + 2)
                break
            flags = data[pos]
            if flags & _LONG:
                if pos + 9 > end:
                    self._keep(data, pos, pos + 9)
                    break
                size = _U64.unpack_from(data, pos + 1)[0]
                start = pos + 9
                if size > MAX_FRAME:
                    raise ZmtpError(f"a frame of {size} bytes")
            else:
                size = data[pos + 1]
                start = pos + 2
            stop = start + size
            if stop > end:
                self._keep(data, pos, stop)
                break
            body = data[start:stop]
            pos = stop
            if flags & _COMMAND:
                command = self._command(body)
                if command is not None:
                    out.append(command)
                continue
            if not self._ready:
                raise ZmtpError("a message before the handshake's READY")
            parts.append(body)
            if not flags & _MORE:
                out.append(parts)
                parts = self._parts = []

    def _keep(self, data: bytes, pos: int, need: int) -> None:
        """Keep data[pos:] for the next read; parsing resumes once `need - pos` bytes are in."""
        if pos < len(data):
            self._buffer += data[pos:]
        self._need = need - pos

    @staticmethod
    def _check_signature(start: bytes) -> None:
        if start[:1] and start[0] != 0xFF:
            raise ZmtpError("not a ZMTP peer (bad signature)")

    @staticmethod
    def _check_greeting(got: bytes) -> None:
        if got[0] != 0xFF or not got[9] & 0x01:
            raise ZmtpError("not a ZMTP peer (bad signature)")
        if got[10] < 3:
            raise ZmtpError(f"ZMTP {got[10]}.{got[11]} is too old (3.0 or later needed)")
        mechanism = got[12:32].rstrip(b"\x00")
        if mechanism != b"NULL":
            raise ZmtpError(f"the peer wants the {mechanism.decode('ascii', 'replace')} "
                            "mechanism (this link speaks NULL only)")

    def _command(self, body: bytes) -> Ping | Ready | None:
        if not body or len(body) < 1 + body[0]:
            raise ZmtpError("a malformed command")
        name = body[1:1 + body[0]]
        data = body[1 + body[0]:]
        if name == b"READY":
            if self._ready:
                raise ZmtpError("a second READY")
            self._ready = True
            return Ready(_property(data, b"Socket-Type"))
        if name == b"ERROR":
            reason = data[1:1 + data[0]] if data else b""
            raise ZmtpError(f"the peer refused the connection: {reason.decode('utf-8', 'replace')}")
        if not self._ready:
            raise ZmtpError(f"unexpected {name.decode('ascii', 'replace')} during the handshake")
        if name == b"PING":
            return Ping(data[2:18])  # after the TTL, up to 16 bytes of context
        return None  # PONG (any bytes prove the peer alive), or what this link has no use for


def _property(data: bytes, wanted: bytes) -> bytes:
    """One property's value from READY's metadata; b"" if absent."""
    pos, end = 0, len(data)
    wanted = wanted.lower()
    while pos < end:
        name_size = data[pos]
        name = data[pos + 1:pos + 1 + name_size]
        pos += 1 + name_size
        if pos + 4 > end:
            raise ZmtpError("malformed READY metadata")
        value_size = _U32.unpack_from(data, pos)[0]
        pos += 4
        value = data[pos:pos + value_size]
        if len(value) != value_size:
            raise ZmtpError("malformed READY metadata")
        pos += value_size
        if name.lower() == wanted:
            return value
    return b""
