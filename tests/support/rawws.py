"""A WebSocket client on a bare socket, for what well-behaved clients never do:
stop reading, or send frames a library would refuse to build.

Well-formed frames come from `protocol.frames.masked_frame`, the builder the
bench client uses too; `malformed_frame` here builds the ones no correct
client sends.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

import msgspec

from protocol.frames import apply_mask, masked_frame
from protocol.websocket import OP_CLOSE, OP_TEXT, close_code


def malformed_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
    length_bytes: int | None = None,
    masked: bool = True,
) -> bytes:
    """A frame built exactly as told, wrong on purpose where told to be.

    `length` is the length the header declares (default: the payload's), any
    64-bit value including ones with the top bit set; `length_bytes` forces
    its form, 0, 2 or 8 extra bytes, minimal or not; `masked=False` leaves out
    the mask bit and key. With `payload` empty and `length` set, this is a
    header alone, announcing a payload never sent.
    """
    declared = len(payload) if length is None else length
    if length_bytes is None:
        length_bytes = 0 if declared < 126 else 2 if declared < 65536 else 8
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0x0F
    mask_bit = 0x80 if masked else 0
    if length_bytes == 0:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif length_bytes == 2:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


class RawWs:
    def __init__(self, port: int, rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            # Set before connecting so the TCP window starts (and stays) small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        # A bytearray: frames are cut off its front, which CPython does without
        # copying the rest, so reading a long flood stays linear.
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))

    def send_json(self, value: Any) -> None:
        self.sock.sendall(masked_frame(OP_TEXT, json.dumps(value).encode()))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"closed with {len(self.buf)} bytes of a frame buffered")
            self.buf += chunk

    def read_frame(self) -> tuple[int, bytes]:
        self._need(2)
        first, second = self.buf[0], self.buf[1]
        n = second & 0x7F
        offset = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            offset = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            offset = 10
        self._need(offset + n)
        payload = bytes(self.buf[offset : offset + n])
        del self.buf[: offset + n]
        return first & 0x0F, payload

    def read_json(self) -> dict[str, Any]:
        while True:
            opcode, payload = self.read_frame()
            if opcode == OP_TEXT:
                # msgspec: stricter than json.loads (no NaN, no lone surrogate escape),
                # and fast enough to read a flood of hundreds of thousands of frames.
                value: dict[str, Any] = msgspec.json.decode(payload)
                return value
            if opcode == OP_CLOSE:
                raise ConnectionError(f"closed {close_code(payload)}")

    def read_until_close(self) -> tuple[int | None, str, int]:
        """Read every frame up to the close frame: (code, reason, text frames seen)."""
        texts = 0
        while True:
            opcode, payload = self.read_frame()
            if opcode == OP_CLOSE:
                code = close_code(payload)
                return code, payload[2:].decode(errors="replace"), texts
            if opcode == OP_TEXT:
                texts += 1

    def at_eof(self) -> bool:
        """Whether the server has closed its side with nothing left unread."""
        if self.buf:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True  # closed abruptly: closed all the same

    def close(self) -> None:
        self.sock.close()
