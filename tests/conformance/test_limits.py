"""Autobahn section 9, against the edge's own limit (--max-frame-bytes, LIMIT).

Autobahn's section 9 sends messages up to 16 MiB to time a server. Here the
sizes are the edge's limit: a message or frame of exactly LIMIT bytes
passes, whole, in fragments of any size, or in any TCP chops; one byte more
closes the connection with 1009 (RFC 6455 section 7.4.1), whole or in
fragments. Cases "N+1" are case N with one byte over the limit.
"""

from __future__ import annotations

import pytest

from protocol.frames import masked_frame
from protocol.websocket import OP_BINARY, OP_CONTINUATION, OP_TEXT
from tests.conformance.conftest import LIMIT
from tests.conformance.peer import PING, Peer


def in_fragments(opcode: int, payload: bytes, size: int) -> list[bytes]:
    """`payload` as one message in fragments of `size` bytes."""
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    last = len(chunks) - 1
    return [
        masked_frame(opcode if i == 0 else OP_CONTINUATION, chunk, fin=i == last)
        for i, chunk in enumerate(chunks)
    ]


def expect_answer(ws: Peer, opcode: int) -> None:
    if opcode == OP_TEXT:
        ws.expect_pong_reply()
    else:
        ws.expect_error("bad_json")  # binary messages: the documented answer
        ws.expect_alive()


def message(opcode: int, size: int) -> bytes:
    return PING.ljust(size) if opcode == OP_TEXT else b"\xfe" * size


@pytest.mark.parametrize(
    "opcode", [pytest.param(OP_TEXT, id="9.1.1"), pytest.param(OP_BINARY, id="9.2.1")]
)
def test_case_9_message_of_the_limit(ws: Peer, opcode: int) -> None:
    ws.send(masked_frame(opcode, message(opcode, LIMIT)))
    expect_answer(ws, opcode)


@pytest.mark.parametrize(
    "opcode", [pytest.param(OP_TEXT, id="9.1.1+1"), pytest.param(OP_BINARY, id="9.2.1+1")]
)
def test_case_9_message_over_the_limit(ws: Peer, opcode: int) -> None:
    ws.send(masked_frame(opcode, message(opcode, LIMIT + 1)))
    ws.expect_close(1009)


FRAGMENT_SIZES = [64, 256, 1024, 4096, 16384, 65536]


@pytest.mark.parametrize(
    ("opcode", "size"),
    [
        *(pytest.param(OP_TEXT, s, id=f"9.3.{i}") for i, s in enumerate(FRAGMENT_SIZES, 1)),
        *(pytest.param(OP_BINARY, s, id=f"9.4.{i}") for i, s in enumerate(FRAGMENT_SIZES, 1)),
    ],
)
def test_case_9_fragmented_message_of_the_limit(ws: Peer, opcode: int, size: int) -> None:
    # 9.3.x, 9.4.x: the limit is on the message, however it is fragmented.
    ws.send(*in_fragments(opcode, message(opcode, LIMIT), size))
    expect_answer(ws, opcode)


@pytest.mark.parametrize(
    ("opcode", "size"),
    [
        pytest.param(OP_TEXT, 64, id="9.3.1+1"),
        pytest.param(OP_TEXT, 16384, id="9.3.5+1"),
        pytest.param(OP_BINARY, 64, id="9.4.1+1"),
        pytest.param(OP_BINARY, 16384, id="9.4.5+1"),
    ],
)
def test_case_9_fragmented_message_over_the_limit(ws: Peer, opcode: int, size: int) -> None:
    ws.send(*in_fragments(opcode, message(opcode, LIMIT + 1), size))
    ws.expect_close(1009)


@pytest.mark.parametrize(
    "opcode", [pytest.param(OP_TEXT, id="9.3.6+1"), pytest.param(OP_BINARY, id="9.4.6+1")]
)
def test_case_9_fragment_over_the_limit(ws: Peer, opcode: int) -> None:
    # A first fragment already over the limit: the message can only be bigger.
    ws.send(masked_frame(opcode, message(opcode, LIMIT + 1), fin=False))
    ws.expect_close(1009)


CHOPS = [64, 128, 256, 512, 1024, 2048]


@pytest.mark.parametrize(
    ("opcode", "chop"),
    [
        *(pytest.param(OP_TEXT, c, id=f"9.5.{i}") for i, c in enumerate(CHOPS, 1)),
        *(pytest.param(OP_BINARY, c, id=f"9.6.{i}") for i, c in enumerate(CHOPS, 1)),
    ],
)
def test_case_9_message_of_the_limit_in_tcp_chops(ws: Peer, opcode: int, chop: int) -> None:
    # 9.5.x, 9.6.x: one frame of the limit, arriving in small TCP writes.
    ws.send(masked_frame(opcode, message(opcode, LIMIT)), chop=chop)
    expect_answer(ws, opcode)


def test_case_9_7(ws: Peer) -> None:
    # 9.7.x: a thousand small messages back to back, each answered, in order.
    ws.send(*(masked_frame(OP_TEXT, PING) for _ in range(1000)))
    for _ in range(1000):
        ws.expect_pong_reply()
