"""A minimal WebSocket client (RFC 6455) on a bare asyncio protocol.

The generator receives up to hundreds of thousands of frames per second on
one core. aiohttp's client spends most of that core on per-message objects
and queues; here `data_received` walks the buffer and hands each text
payload straight to a callback, with no task switch per frame. Only what a
benchmark client needs: no extensions, no subprotocols, text frames in and
out, pings answered, close handled. Opcodes, client frames and the accept
key come from `protocol`, the code the edge itself runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from protocol.frames import masked_frame
from protocol.handshake import accept_key
from protocol.websocket import OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT

MAX_HEAD = 64 * 1024


class HandshakeError(Exception):
    pass


class FrameParser:
    """Splits the server's byte stream into frames; text payloads go to `on_text`.

    Server frames are never masked. Fragmented text messages are joined.
    Control frames go to `on_control(opcode, payload)`.
    """

    __slots__ = ("_buf", "_fragments", "_text", "on_control", "on_text")

    def __init__(self, on_text: Callable[[bytes], None],
                 on_control: Callable[[int, bytes], None]) -> None:
        self.on_text = on_text
        self.on_control = on_control
        self._buf = bytearray()
        self._fragments: list[bytes] | None = None
        self._text = False  # the fragmented message under way is text

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            if second & 0x80:
                raise ValueError("server sent a masked frame")
            end = start + length
            if end > size:
                break
            payload = bytes(buf[start:end])
            pos = end
            opcode = first & 0x0F
            if opcode == OP_TEXT and first & 0x80:
                self.on_text(payload)
            elif opcode >= OP_CLOSE:
                self.on_control(opcode, payload)
            else:
                self._fragment(opcode, payload, bool(first & 0x80))
        if pos:
            del buf[:pos]

    def _fragment(self, opcode: int, payload: bytes, final: bool) -> None:
        if opcode != OP_CONTINUATION:
            self._fragments = [] if opcode == OP_TEXT else None  # binary: dropped
            self._text = opcode == OP_TEXT
        elif not self._text:
            return
        if self._fragments is None:
            raise ValueError("continuation frame without a start")
        self._fragments.append(payload)
        if final:
            whole, self._fragments = b"".join(self._fragments), None
            self.on_text(whole)


class ClientProtocol(asyncio.Protocol):
    def __init__(self, host: str, path: str, on_text: Callable[[bytes], None]) -> None:
        self._key = base64.b64encode(os.urandom(16))
        self._mask = os.urandom(4)
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._head = bytearray()
        self._parser: FrameParser | None = None
        self._on_text = on_text
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._out: list[bytes] = []  # frames waiting for the end of this loop iteration
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.on_lost: Callable[[], None] = lambda: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Small chat frames must leave at once, not wait on Nagle for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._parser is not None:
            try:
                self._parser.feed(data)
            except ValueError:
                self._abort()
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._fail(HandshakeError("handshake response too long"))
            return
        head, rest = bytes(self._head[:end]).decode("latin-1"), bytes(self._head[end + 4:])
        self._head.clear()
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            self._fail(HandshakeError(f"upgrade refused: {lines[0]}"))
            return
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("sec-websocket-accept", "") != accept_key(self._key.decode()):
            self._fail(HandshakeError("bad Sec-WebSocket-Accept"))
            return
        self._parser = FrameParser(self._on_text, self._control)
        self.upgraded.set_result(None)
        if rest:
            self.data_received(rest)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            with contextlib.suppress(ConnectionError):
                self.send(OP_CLOSE, payload[:2])
                self._flush()
            if self.transport is not None:
                self.transport.close()

    def send(self, opcode: int, payload: bytes) -> None:
        """Queue a frame; everything queued in one loop iteration leaves in one write.

        A closed-loop sender whose window reopens sends a burst of frames: one
        syscall for the burst instead of one per frame halves the generator's
        cost per message on loopback.
        """
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(masked_frame(opcode, payload, mask=self._mask))

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def send_text(self, payload: bytes) -> None:
        self.send(OP_TEXT, payload)

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        """Drop the connection without a close handshake (the peer sees a reset)."""
        self._out.clear()
        self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionResetError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_lost()

    async def close(self, grace: float = 5.0) -> None:
        """Close handshake: send 1000, wait for the server to answer and hang up."""
        with contextlib.suppress(ConnectionError):
            self.send(OP_CLOSE, struct.pack("!H", 1000))
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), grace)
        except TimeoutError:
            self._abort()


async def connect(url: str, on_text: Callable[[bytes], None]) -> ClientProtocol:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:  # e.g. open mode's ?user=...&name=...
        path += f"?{parts.query}"
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: ClientProtocol(f"{host}:{port}", path, on_text), host, port
    )
    await proto.upgraded
    return proto
