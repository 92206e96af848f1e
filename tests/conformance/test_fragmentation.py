"""Autobahn section 5: fragmentation (RFC 6455 section 5.4).

Autobahn sends most cases three ways: all frames in one write, frame by
frame, and a byte per write. The ids keep its numbers for each way.
"""

from __future__ import annotations

import pytest

from protocol.frames import masked_frame
from protocol.websocket import OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT
from tests.conformance.peer import PING, Peer


def send_each(ws: Peer, frames: list[bytes], way: str) -> None:
    """Send `frames` in one write ("whole"), a write per frame ("frames") or a byte per write."""
    if way == "whole":
        ws.send(*frames)
    elif way == "frames":
        for frame in frames:
            ws.send(frame)
    else:
        ws.send(*frames, chop=1)


@pytest.mark.parametrize(
    "opcode", [pytest.param(OP_PING, id="5.1"), pytest.param(OP_PONG, id="5.2")]
)
def test_case_5_fragmented_control(ws: Peer, opcode: int) -> None:
    # 5.1, 5.2: control frames must not be fragmented (section 5.5).
    ws.send(
        masked_frame(opcode, b"fragment1", fin=False),
        masked_frame(OP_CONTINUATION, b"fragment2"),
    )
    ws.expect_close(1002)


@pytest.mark.parametrize(
    "way",
    [pytest.param("whole", id="5.3"), pytest.param("frames", id="5.4"),
     pytest.param("octets", id="5.5")],
)
def test_case_5_text_in_two_fragments(ws: Peer, way: str) -> None:
    # 5.3-5.5: a text message in two fragments is one message.
    frames = [masked_frame(OP_TEXT, PING[:7], fin=False), masked_frame(OP_CONTINUATION, PING[7:])]
    send_each(ws, frames, way)
    ws.expect_pong_reply()


@pytest.mark.parametrize(
    "way",
    [pytest.param("whole", id="5.6"), pytest.param("frames", id="5.7"),
     pytest.param("octets", id="5.8")],
)
def test_case_5_ping_between_fragments(ws: Peer, way: str) -> None:
    # 5.6-5.8: a ping between two fragments is answered at once, the
    # message when it is complete (section 5.4: control frames may be injected).
    frames = [
        masked_frame(OP_TEXT, PING[:7], fin=False),
        masked_frame(OP_PING, b"ping payload"),
        masked_frame(OP_CONTINUATION, PING[7:]),
    ]
    send_each(ws, frames, way)
    ws.expect_pong(b"ping payload")
    ws.expect_pong_reply()


@pytest.mark.parametrize(
    ("fin", "way"),
    [
        pytest.param(True, "whole", id="5.9"),
        pytest.param(True, "frames", id="5.10"),
        pytest.param(True, "octets", id="5.11"),
        pytest.param(False, "whole", id="5.12"),
        pytest.param(False, "frames", id="5.13"),
        pytest.param(False, "octets", id="5.14"),
    ],
)
def test_case_5_continuation_without_a_start(ws: Peer, fin: bool, way: str) -> None:
    # 5.9-5.14: a continuation frame with nothing to continue, then a message:
    # the connection fails at the continuation, the message is never answered.
    frames = [masked_frame(OP_CONTINUATION, b"non-continuation payload", fin=fin),
              masked_frame(OP_TEXT, PING)]
    send_each(ws, frames, way)
    ws.expect_close(1002)


def test_case_5_15(ws: Peer) -> None:
    # 5.15: a message in two fragments (answered), then a continuation with
    # nothing to continue (fail), then a message (never answered).
    ws.send(
        masked_frame(OP_TEXT, PING[:7], fin=False),
        masked_frame(OP_CONTINUATION, PING[7:]),
        masked_frame(OP_CONTINUATION, b"fragment3", fin=False),
        masked_frame(OP_TEXT, PING),
    )
    ws.expect_pong_reply()
    ws.expect_close(1002)


@pytest.mark.parametrize("fin", [pytest.param(False, id="5.16"), pytest.param(True, id="5.17")])
def test_case_5_continuation_first_repeated(ws: Peer, fin: bool) -> None:
    # 5.16, 5.17: twice over, a continuation with nothing to continue, then a
    # message in two fragments: the first continuation fails the connection.
    once = [
        masked_frame(OP_CONTINUATION, b"fragment1", fin=fin),
        masked_frame(OP_TEXT, PING[:7], fin=False),
        masked_frame(OP_CONTINUATION, PING[7:]),
    ]
    ws.send(*once, *once)
    ws.expect_close(1002)


def test_case_5_18(ws: Peer) -> None:
    # 5.18: a message in two fragments whose second is a text frame, not a
    # continuation: a new message may not start inside a fragmented one.
    ws.send(masked_frame(OP_TEXT, PING[:7], fin=False), masked_frame(OP_TEXT, PING[7:]))
    ws.expect_close(1002)


@pytest.mark.parametrize(
    "way", [pytest.param("whole", id="5.19"), pytest.param("frames", id="5.20")]
)
def test_case_5_pings_among_five_fragments(ws: Peer, way: str) -> None:
    # 5.19, 5.20: a message in five fragments with a ping after the second and
    # the fourth: two pongs as they come, then the message's answer.
    parts = [PING[:3], PING[3:6], PING[6:9], PING[9:12], PING[12:]]
    frames = [
        masked_frame(OP_TEXT, parts[0], fin=False),
        masked_frame(OP_CONTINUATION, parts[1], fin=False),
        masked_frame(OP_PING, b"pongme 1!"),
        masked_frame(OP_CONTINUATION, parts[2], fin=False),
        masked_frame(OP_CONTINUATION, parts[3], fin=False),
        masked_frame(OP_PING, b"pongme 2!"),
        masked_frame(OP_CONTINUATION, parts[4]),
    ]
    send_each(ws, frames, way)
    ws.expect_pong(b"pongme 1!")
    ws.expect_pong(b"pongme 2!")
    ws.expect_pong_reply()
