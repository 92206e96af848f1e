"""Autobahn sections 1-4: framing, pings and pongs, reserved bits, opcodes.

Autobahn echoes text; a chat server answers its protocol instead. Each data
case sends the chat protocol's ping, padded with JSON whitespace to the
case's size, and expects {"type":"pong"}; binary messages get the error the
README documents for them, `bad_json`.
"""

from __future__ import annotations

import struct

import pytest

from protocol.frames import masked_frame
from protocol.websocket import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from tests.conformance.peer import PING, Peer


def padded_ping(size: int) -> bytes:
    assert size >= len(PING)
    return PING.ljust(size)


# 1.x: framing.

def test_case_1_1_1(ws: Peer) -> None:
    # 1.1.1: a text message of 0 bytes. Valid UTF-8, not JSON.
    ws.send(masked_frame(OP_TEXT, b""))
    ws.expect_error("bad_json")


@pytest.mark.parametrize(
    ("size", "chop"),
    [
        pytest.param(125, None, id="1.1.2"),
        pytest.param(126, None, id="1.1.3"),  # the smallest 16-bit length
        pytest.param(127, None, id="1.1.4"),
        pytest.param(128, None, id="1.1.5"),
        pytest.param(65535, None, id="1.1.6"),  # the largest 16-bit length
        pytest.param(65536, None, id="1.1.7"),  # the smallest 64-bit length
        pytest.param(65536, 997, id="1.1.8"),  # the same, in TCP writes of 997 bytes
    ],
)
def test_case_1_1(ws: Peer, size: int, chop: int | None) -> None:
    # 1.1.2-1.1.8: a text message of `size` bytes gets the chat protocol's answer.
    ws.send(masked_frame(OP_TEXT, padded_ping(size)), chop=chop)
    ws.expect_pong_reply()


@pytest.mark.parametrize(
    ("size", "chop"),
    [
        pytest.param(0, None, id="1.2.1"),
        pytest.param(125, None, id="1.2.2"),
        pytest.param(126, None, id="1.2.3"),
        pytest.param(127, None, id="1.2.4"),
        pytest.param(128, None, id="1.2.5"),
        pytest.param(65535, None, id="1.2.6"),
        pytest.param(65536, None, id="1.2.7"),
        pytest.param(65536, 997, id="1.2.8"),
    ],
)
def test_case_1_2(ws: Peer, size: int, chop: int | None) -> None:
    # 1.2.1-1.2.8: a binary message of `size` bytes gets the documented answer,
    # and the connection stays usable.
    ws.send(masked_frame(OP_BINARY, b"\xfe" * size), chop=chop)
    ws.expect_error("bad_json")
    ws.expect_alive()


# 2.x: pings and pongs.

@pytest.mark.parametrize(
    ("payload", "chop"),
    [
        pytest.param(b"", None, id="2.1"),  # no payload
        pytest.param(b"Hello, world!", None, id="2.2"),  # a small text payload
        pytest.param(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", None, id="2.3"),  # binary
        pytest.param(b"\xfe" * 125, None, id="2.4"),  # the largest a control frame allows
        pytest.param(b"\xfe" * 125, 1, id="2.6"),  # the same, one byte per TCP write
    ],
)
def test_case_2_ping_is_answered(ws: Peer, payload: bytes, chop: int | None) -> None:
    # A ping is answered by a pong with the same payload (RFC 6455 section 5.5.3).
    ws.send(masked_frame(OP_PING, payload), chop=chop)
    ws.expect_pong(payload)


def test_case_2_5(ws: Peer) -> None:
    # 2.5: a ping with 126 bytes of payload: control frames carry at most 125.
    ws.send(masked_frame(OP_PING, b"\xfe" * 126))
    ws.expect_close(1002)


@pytest.mark.parametrize(
    "payload",
    [pytest.param(b"", id="2.7"), pytest.param(b"unsolicited pong payload", id="2.8")],
)
def test_case_2_unsolicited_pong_is_ignored(ws: Peer, payload: bytes) -> None:
    # 2.7, 2.8: a pong nobody asked for is allowed and needs no answer.
    ws.send(masked_frame(OP_PONG, payload))
    ws.expect_alive()


def test_case_2_9(ws: Peer) -> None:
    # 2.9: an unsolicited pong, then a ping: only the ping is answered.
    ws.send(masked_frame(OP_PONG, b"unsolicited"), masked_frame(OP_PING, b"solicited"))
    ws.expect_pong(b"solicited")
    ws.expect_alive()


@pytest.mark.parametrize("chop", [pytest.param(None, id="2.10"), pytest.param(1, id="2.11")])
def test_case_2_ten_pings(ws: Peer, chop: int | None) -> None:
    # 2.10, 2.11: ten pings, answered by ten pongs in order; 2.11 sends them a
    # byte per TCP write.
    payloads = [f"payload-{i}".encode() for i in range(10)]
    ws.send(*(masked_frame(OP_PING, p) for p in payloads), chop=chop)
    for payload in payloads:
        ws.expect_pong(payload)


# 3.x: reserved bits. Without a negotiated extension any set RSV bit fails the
# connection (section 5.2). Where a case sends a valid message first, its
# answer comes before the close; the ping after the bad frame is never answered.

@pytest.mark.parametrize(
    ("rsv", "lead", "chop"),
    [
        pytest.param(1, False, None, id="3.1"),
        pytest.param(2, True, None, id="3.2"),
        pytest.param(3, True, None, id="3.3"),
        pytest.param(4, True, 1, id="3.4"),
    ],
)
def test_case_3_text(ws: Peer, rsv: int, lead: bool, chop: int | None) -> None:
    frames = [masked_frame(OP_TEXT, PING)] if lead else []
    frames += [masked_frame(OP_TEXT, PING, rsv=rsv), masked_frame(OP_PING, b"after")]
    ws.send(*frames, chop=chop)
    if lead:
        ws.expect_pong_reply()
    ws.expect_close(1002)


@pytest.mark.parametrize(
    ("rsv", "frame"),
    [
        pytest.param(5, (OP_BINARY, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"), id="3.5"),
        pytest.param(6, (OP_PING, b"Hello, world!"), id="3.6"),
        pytest.param(7, (OP_CLOSE, struct.pack("!H", 1000)), id="3.7"),
    ],
)
def test_case_3_other(ws: Peer, rsv: int, frame: tuple[int, bytes]) -> None:
    ws.send(masked_frame(*frame, rsv=rsv))
    ws.expect_close(1002)


# 4.x: opcodes 3-7 (data) and 11-15 (control) are reserved: fail (section 5.2).

@pytest.mark.parametrize(
    ("opcode", "payload", "lead"),
    [
        pytest.param(3, b"", False, id="4.1.1"),
        pytest.param(4, b"reserved opcode", False, id="4.1.2"),
        pytest.param(5, b"", True, id="4.1.3"),
        pytest.param(6, b"reserved opcode", True, id="4.1.4"),
        pytest.param(7, b"reserved opcode", True, id="4.1.5"),
        pytest.param(11, b"", False, id="4.2.1"),
        pytest.param(12, b"reserved opcode", False, id="4.2.2"),
        pytest.param(13, b"", True, id="4.2.3"),
        pytest.param(14, b"reserved opcode", True, id="4.2.4"),
        pytest.param(15, b"reserved opcode", True, id="4.2.5"),
    ],
)
def test_case_4(ws: Peer, opcode: int, payload: bytes, lead: bool) -> None:
    # Cases with a valid message first: its answer, then the close; the ping
    # after the reserved opcode is never answered.
    frames = [masked_frame(OP_TEXT, PING)] if lead else []
    frames += [masked_frame(opcode, payload), masked_frame(OP_PING, b"after")]
    ws.send(*frames)
    if lead:
        ws.expect_pong_reply()
    ws.expect_close(1002)
