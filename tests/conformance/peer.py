"""The client side of the conformance cases: send exact bytes, expect exact frames.

Every expectation reads the next frame and fails at once on anything else,
so a server that answers wrongly fails a case in milliseconds, and one that
does not answer at all fails it after `TIMEOUT`, never later.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from protocol.frames import masked_frame
from protocol.websocket import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, close_code
from tests.support.rawws import RawWs

TIMEOUT = 2.0  # seconds any expected frame may take; loopback answers in microseconds
PING = b'{"type":"ping"}'  # the chat protocol's ping, answered by {"type":"pong"}
NAMES = {0x0: "continuation", 0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}


def describe(opcode: int, payload: bytes) -> str:
    name = NAMES.get(opcode, f"opcode {opcode:#x}")
    if opcode == OP_CLOSE:
        return f"close {close_code(payload)} {payload[2:]!r}"
    return f"{name} {payload[:80]!r}"


class Peer(RawWs):
    def __init__(self, port: int) -> None:
        super().__init__(port, timeout=TIMEOUT)
        # Cases that send a byte per write mean it: no coalescing by Nagle.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, *frames: bytes, chop: int | None = None) -> None:
        """Send frames back to back; with `chop`, in TCP writes of at most that many bytes."""
        data = b"".join(frames)
        if chop is None:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), chop):
            self.sock.sendall(data[i : i + chop])

    def next_frame(self) -> tuple[int, bytes]:
        """The next frame from the edge, its heartbeat pings skipped."""
        while True:
            try:
                opcode, payload = self.read_frame()
            except TimeoutError:
                raise AssertionError(f"no frame from the edge within {TIMEOUT} s") from None
            if opcode != OP_PING:
                return opcode, payload

    def expect_reply(self) -> dict[str, Any]:
        opcode, payload = self.next_frame()
        assert opcode == OP_TEXT, f"expected a chat reply, got {describe(opcode, payload)}"
        value: dict[str, Any] = json.loads(payload)
        return value

    def expect_pong_reply(self) -> None:
        """The chat protocol's answer to PING (a text frame, not a WebSocket pong)."""
        assert self.expect_reply() == {"type": "pong"}

    def expect_error(self, code: str) -> None:
        reply = self.expect_reply()
        assert reply["type"] == "error" and reply["payload"]["code"] == code, reply

    def expect_pong(self, payload: bytes) -> None:
        """A WebSocket pong frame carrying exactly `payload`."""
        opcode, data = self.next_frame()
        expected = f"expected pong {payload[:80]!r}"
        assert (opcode, data) == (OP_PONG, payload), f"{expected}, got {describe(opcode, data)}"

    def expect_close(self, *codes: int | None) -> bytes:
        """The edge's close frame with one of `codes`, then the end of the stream.

        Nothing may come between (no reply, no pong) unless the case read it
        first; after its close frame a server sends nothing more (RFC 6455
        section 5.5.1) and closes the TCP connection (section 7.1.1).
        """
        opcode, payload = self.next_frame()
        got = f"expected close {' or '.join(map(str, codes))}, got {describe(opcode, payload)}"
        assert opcode == OP_CLOSE and close_code(payload) in codes, got
        payload[2:].decode()  # a close reason is UTF-8 (section 5.5.1)
        try:
            closed = self.at_eof()
        except TimeoutError:
            raise AssertionError("the edge kept the TCP connection open after closing") from None
        assert closed, f"data after the close frame: {self.buf[:80]!r}"
        return payload[2:]

    def expect_alive(self) -> None:
        """The connection still serves the chat protocol: nothing was answered before."""
        self.send_text(PING)
        self.expect_pong_reply()

    def send_text(self, payload: bytes) -> None:
        self.send(masked_frame(OP_TEXT, payload))
