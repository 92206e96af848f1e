"""Autobahn section 7: the closing handshake (RFC 6455 sections 5.5.1, 7.1 and 7.4).

A close frame from the client is answered by one close frame (echoing its
code), then the edge closes TCP; whatever the client sends after its close
is ignored. A malformed close fails the connection: 1002, or 1007 for a
reason that is not UTF-8.
"""

from __future__ import annotations

import struct

import pytest

from protocol.frames import masked_frame
from protocol.websocket import OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT
from tests.conformance.conftest import LIMIT
from tests.conformance.peer import PING, Peer


def close(code: int, reason: bytes = b"") -> bytes:
    return masked_frame(OP_CLOSE, struct.pack("!H", code) + reason)


# 7.1: closing, and what comes after a close.

def test_case_7_1_1(ws: Peer) -> None:
    # 7.1.1: a message, then a normal close: the answer, then the close echoed.
    ws.send(masked_frame(OP_TEXT, PING), close(1000))
    ws.expect_pong_reply()
    ws.expect_close(1000)


def test_case_7_1_2(ws: Peer) -> None:
    # 7.1.2: two close frames: one close answered, the second ignored.
    ws.send(close(1000), close(1000))
    ws.expect_close(1000)


def test_case_7_1_3(ws: Peer) -> None:
    # 7.1.3: a ping after the close is not answered.
    ws.send(close(1000), masked_frame(OP_PING, b"after close"))
    ws.expect_close(1000)


def test_case_7_1_4(ws: Peer) -> None:
    # 7.1.4: a message after the close is not answered.
    ws.send(close(1000), masked_frame(OP_TEXT, PING))
    ws.expect_close(1000)


def test_case_7_1_5(ws: Peer) -> None:
    # 7.1.5: a message's first fragment, the close, the last fragment: the
    # message is never completed, so never answered.
    ws.send(
        masked_frame(OP_TEXT, PING[:7], fin=False),
        close(1000),
        masked_frame(OP_CONTINUATION, PING[7:]),
    )
    ws.expect_close(1000)


def test_case_7_1_6(ws: Peer) -> None:
    # 7.1.6: a large message (256 KiB in Autobahn; here the edge's limit),
    # the close, a ping: the message is answered, the ping is not.
    ws.send(
        masked_frame(OP_TEXT, PING.ljust(LIMIT)),
        close(1000),
        masked_frame(OP_PING, b"after close"),
    )
    ws.expect_pong_reply()
    ws.expect_close(1000)


# 7.3: the close frame's payload.

def test_case_7_3_1(ws: Peer) -> None:
    # 7.3.1: a close without a payload: answered by a close, without a code or
    # with 1000 (section 7.4.1: 1005 stands for "no code" but is never sent).
    ws.send(masked_frame(OP_CLOSE, b""))
    ws.expect_close(None, 1000)


def test_case_7_3_2(ws: Peer) -> None:
    # 7.3.2: a 1-byte payload: half a status code.
    ws.send(masked_frame(OP_CLOSE, b"\x03"))
    ws.expect_close(1002)


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param(b"", id="7.3.3"),
        pytest.param(b"Hello World!", id="7.3.4"),
        pytest.param(b"*" * 123, id="7.3.5"),  # the longest reason a control frame holds
    ],
)
def test_case_7_3_valid(ws: Peer, reason: bytes) -> None:
    ws.send(close(1000, reason))
    ws.expect_close(1000)


def test_case_7_3_6(ws: Peer) -> None:
    # 7.3.6: a 124-byte reason makes a 126-byte control frame.
    ws.send(close(1000, b"*" * 124))
    ws.expect_close(1002)


def test_case_7_5_1(ws: Peer) -> None:
    # 7.5.1: a close reason that is not UTF-8 (a lone surrogate).
    ws.send(close(1000, bytes.fromhex("cebae1bdb9cf83cebcceb5eda080") + b"edited"))
    ws.expect_close(1007)


# 7.7: every code a client may send is echoed.

@pytest.mark.parametrize(
    "code",
    [
        pytest.param(code, id=f"7.7.{i}")
        for i, code in enumerate(
            [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999],
            start=1,
        )
    ],
)
def test_case_7_7(ws: Peer, code: int) -> None:
    ws.send(close(code))
    ws.expect_close(code)


# 7.9, 7.13: codes no endpoint may send (reserved, unassigned, or out of range).

@pytest.mark.parametrize(
    "code",
    [
        *(
            pytest.param(code, id=f"7.9.{i}")
            for i, code in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999], start=1)
        ),
        pytest.param(5000, id="7.13.1"),
        pytest.param(65535, id="7.13.2"),
    ],
)
def test_case_7_invalid_code(ws: Peer, code: int) -> None:
    ws.send(close(code))
    ws.expect_close(1002)
