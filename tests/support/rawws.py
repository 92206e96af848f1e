"""A WebSocket client on a bare socket, for what well-behaved clients never do:
stop reading, or send frames a library would refuse to build."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any


def mask_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (clients must mask)."""
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + key + masked


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
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))

    def send_json(self, value: Any) -> None:
        self.sock.sendall(mask_frame(0x1, json.dumps(value).encode()))

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
        payload = self.buf[offset : offset + n]
        self.buf = self.buf[offset + n :]
        return first & 0x0F, payload

    def read_json(self) -> dict[str, Any]:
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x1:
                value: dict[str, Any] = json.loads(payload)
                return value
            if opcode == 0x8:
                raise ConnectionError(f"closed {close_code(payload)}")

    def read_until_close(self) -> tuple[int | None, str, int]:
        """Read every frame up to the close frame: (code, reason, text frames seen)."""
        texts = 0
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                code = close_code(payload)
                return code, payload[2:].decode(errors="replace"), texts
            if opcode == 0x1:
                texts += 1

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
