"""The sans-I/O WebSocket connection: every transition, without a socket."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.frames import PING_FRAME, apply_mask, close_frame, masked_frame, pong_frame
from protocol.websocket import (
    MAX_FRAGMENTS,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    BinaryMessage,
    CloseCode,
    CloseReceived,
    Event,
    Failed,
    Send,
    ServerConnection,
    State,
    TextMessage,
)

LIMIT = 1000


def conn() -> ServerConnection:
    return ServerConnection(LIMIT)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def failed_with(events: list[Event]) -> int:
    assert events and isinstance(events[-1], Failed), events
    return events[-1].code


# Data and control frames while open.


def test_messages_and_controls() -> None:
    ws = conn()
    data = (
        masked_frame(OP_TEXT, b'{"type":"ping"}')
        + masked_frame(OP_BINARY, b"\x00\x01")
        + masked_frame(OP_PING, b"hi")
        + masked_frame(OP_PONG, b"")
    )
    assert ws.receive_data(data) == [
        TextMessage(b'{"type":"ping"}'),
        BinaryMessage(b"\x00\x01"),
        Send(pong_frame(b"hi")),  # in the stream's order
    ]
    assert ws.data_to_send() == b""
    assert ws.state is State.OPEN


def test_fragments_with_interleaved_ping() -> None:
    ws = conn()
    data = (
        masked_frame(OP_TEXT, b"hel", fin=False)
        + masked_frame(OP_PING, b"p")
        + masked_frame(OP_CONTINUATION, b"lo", fin=False)
        + masked_frame(OP_CONTINUATION, b"!", fin=True)
    )
    assert ws.receive_data(data) == [Send(pong_frame(b"p")), TextMessage(b"hello!")]


def test_fragmented_binary() -> None:
    ws = conn()
    data = masked_frame(OP_BINARY, b"\xff", fin=False) + masked_frame(OP_CONTINUATION, b"\xfe")
    assert ws.receive_data(data) == [BinaryMessage(b"\xff\xfe")]


# The close handshake, both ways.


def test_peer_closes_and_its_code_is_echoed() -> None:
    ws = conn()
    events = ws.receive_data(masked_frame(OP_CLOSE, close_payload(1001, b"bye")))
    assert events == [CloseReceived(1001, "bye")]
    assert ws.data_to_send() == close_frame(1001, "")
    assert ws.state is State.CLOSED


def test_empty_close_is_answered_with_1000() -> None:
    ws = conn()
    assert ws.receive_data(masked_frame(OP_CLOSE, b"")) == [CloseReceived(None, "")]
    assert ws.data_to_send() == close_frame(1000, "")


def test_replies_to_messages_before_a_close_may_still_be_sent() -> None:
    ws = conn()
    events = ws.receive_data(masked_frame(OP_TEXT, b"first") + masked_frame(OP_CLOSE, b""))
    assert events == [TextMessage(b"first"), CloseReceived(None, "")]
    assert ws.state is State.CLOSED
    assert ws.can_send()  # our answering close has not gone out yet
    assert ws.data_to_send() == close_frame(1000, "")
    assert not ws.can_send()


def test_nothing_may_be_sent_after_our_close() -> None:
    ws = conn()
    assert ws.can_send()
    ws.send_close(1000)
    ws.data_to_send()
    assert not ws.can_send()


def test_nothing_after_a_close_frame_is_acted_on() -> None:
    ws = conn()
    data = masked_frame(OP_CLOSE, b"") + masked_frame(OP_TEXT, b"late") + masked_frame(OP_PING, b"")
    assert ws.receive_data(data) == [CloseReceived(None, "")]
    assert ws.data_to_send() == close_frame(1000, "")
    assert ws.receive_data(masked_frame(OP_PING, b"again")) == []
    assert ws.data_to_send() == b""


def test_server_closes_then_waits_for_the_peers_close() -> None:
    ws = conn()
    ws.send_close(CloseCode.GOING_AWAY, "server shutting down")
    assert ws.state is State.CLOSING
    assert ws.data_to_send() == close_frame(1001, "server shutting down")
    # Frames the peer sent before it saw our close are read and dropped.
    data = masked_frame(OP_TEXT, b"in flight") + masked_frame(OP_PING, b"x")
    assert ws.receive_data(data) == []
    assert ws.data_to_send() == b""
    assert ws.state is State.CLOSING
    assert ws.receive_data(masked_frame(OP_CLOSE, close_payload(1001))) == []
    assert ws.state is State.CLOSED
    assert ws.data_to_send() == b""  # our close was already sent: no second one


def test_close_is_sent_once() -> None:
    ws = conn()
    ws.send_close(1000)
    ws.send_close(1001)
    assert ws.data_to_send() == close_frame(1000, "")


def test_a_violation_while_closing_sends_nothing_more() -> None:
    ws = conn()
    ws.send_close(1000)
    ws.data_to_send()
    assert ws.receive_data(b"\x81\x02hi") == []  # unmasked
    assert ws.state is State.CLOSED
    assert ws.data_to_send() == b""


# Heartbeats.


def test_heartbeat_pings_and_detects_silence() -> None:
    ws = conn()
    assert ws.heartbeat()
    assert ws.data_to_send() == PING_FRAME
    assert not ws.heartbeat()  # nothing came back since the last ping
    ws2 = conn()
    assert ws2.heartbeat()
    ws2.receive_data(masked_frame(OP_PONG, b""))
    assert ws2.heartbeat()


def test_a_partial_frame_counts_as_life() -> None:
    ws = conn()
    ws.heartbeat()
    ws.receive_data(masked_frame(OP_TEXT, b"x" * 100)[:10])
    assert ws.heartbeat()


def test_no_ping_once_closing() -> None:
    ws = conn()
    ws.send_close(1000)
    ws.data_to_send()
    assert ws.heartbeat()
    assert ws.data_to_send() == b""


# Violations: each fails the connection with the code RFC 6455 names.


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x81\x02hi", 1002),  # unmasked
        (masked_frame(OP_TEXT, b"x" * (LIMIT + 1)), 1009),
        (masked_frame(OP_TEXT, b"x" * 600, fin=False) + masked_frame(0, b"y" * 401), 1009),
        (bytes([0xC1]) + masked_frame(OP_TEXT, b"x")[1:], 1002),  # RSV1 without extension
        (bytes([0xA1]) + masked_frame(OP_TEXT, b"x")[1:], 1002),  # RSV2
        (bytes([0x91]) + masked_frame(OP_TEXT, b"x")[1:], 1002),  # RSV3
        (masked_frame(0x3, b"x"), 1002),
        (masked_frame(0x7, b"x"), 1002),
        (masked_frame(0xB, b"x"), 1002),
        (masked_frame(0xF, b"x"), 1002),
        (masked_frame(0x0, b"x"), 1002),
        (masked_frame(OP_PING, b"x", fin=False), 1002),
        (masked_frame(OP_PING, b"x" * 126), 1002),
        (masked_frame(OP_TEXT, b"a", fin=False) + masked_frame(OP_TEXT, b"b"), 1002),
        (masked_frame(OP_CLOSE, b"\x03"), 1002),
        (masked_frame(OP_CLOSE, close_payload(999)), 1002),
        (masked_frame(OP_CLOSE, close_payload(1005)), 1002),
        (masked_frame(OP_CLOSE, close_payload(1016)), 1002),
        (masked_frame(OP_CLOSE, close_payload(5000)), 1002),
        (masked_frame(OP_CLOSE, close_payload(1000, b"\xff")), 1007),
        (masked_frame(OP_TEXT, b"\xff"), 1007),
        (masked_frame(OP_TEXT, b"ok \xed\xa0\x80"), 1007),  # a UTF-16 surrogate
        (masked_frame(OP_TEXT, b'{"type":"ping","x":"\xc0\xaf"}'), 1007),  # overlong, in a string
    ],
)
def test_violations(data: bytes, code: int) -> None:
    ws = conn()
    assert failed_with(ws.receive_data(data)) == code
    assert ws.state is State.CLOSED
    sent = ws.data_to_send()
    assert sent[:2] == b"\x88" + bytes([len(sent) - 2])
    assert struct.unpack("!H", sent[2:4])[0] == code
    assert ws.receive_data(masked_frame(OP_TEXT, b"more")) == []  # nothing more is read


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed(code: int) -> None:
    ws = conn()
    assert ws.receive_data(masked_frame(OP_CLOSE, close_payload(code))) == [
        CloseReceived(code, "")
    ]
    assert ws.data_to_send() == close_frame(code, "")


# Header checks come before any payload is buffered.


def _header(first: int, length_bytes: bytes) -> bytes:
    return bytes([first]) + length_bytes


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (_header(0x89, bytes([0x80 | 126]) + struct.pack("!H", 60_000)), 1002),  # big ping
        (_header(0x89, bytes([0x80 | 126])), 1002),  # judged from the 7-bit length alone
        (_header(0x83, bytes([0x80 | 5])), 1002),  # unknown opcode
        (_header(0x81, bytes([0x80 | 126]) + struct.pack("!H", 100)), 1002),  # non-minimal 16
        (_header(0x81, bytes([0x80 | 127]) + struct.pack("!Q", 1000)), 1002),  # non-minimal 64
        (_header(0x81, bytes([0x80 | 127]) + struct.pack("!Q", 1 << 63)), 1002),  # top bit
        (_header(0x81, bytes([0x80 | 127]) + struct.pack("!Q", 1 << 40)), 1009),  # too big
        (_header(0x81, bytes([0x80 | 126]) + struct.pack("!H", LIMIT + 1)), 1009),
    ],
)
def test_fails_at_the_header(header: bytes, code: int) -> None:
    ws = conn()
    assert failed_with(ws.receive_data(header)) == code


def test_a_partial_header_waits() -> None:
    ws = conn()
    assert ws.receive_data(_header(0x81, bytes([0x80 | 127]) + b"\x00\x00")) == []
    assert ws.state is State.OPEN


# Size limit: the same for one frame and for fragments.


def test_a_message_of_exactly_the_limit_passes_whole_and_in_fragments() -> None:
    body = b"x" * LIMIT
    assert conn().receive_data(masked_frame(OP_TEXT, body)) == [TextMessage(body)]
    pieces = [body[i : i + 10] for i in range(0, LIMIT, 10)]
    stream = masked_frame(OP_TEXT, pieces[0], fin=False)
    stream += b"".join(masked_frame(0, p, fin=False) for p in pieces[1:-1])
    stream += masked_frame(0, pieces[-1])
    assert conn().receive_data(stream) == [TextMessage(body)]


def test_fragment_count_is_capped_and_empty_fragments_cost_no_memory() -> None:
    ws = conn()
    stream = masked_frame(OP_TEXT, b"", fin=False) + masked_frame(0, b"", fin=False) * (
        MAX_FRAGMENTS - 2
    )
    assert ws.receive_data(stream) == []
    assert ws.receive_data(masked_frame(0, b"done")) == [TextMessage(b"done")]
    ws = conn()
    stream = masked_frame(OP_TEXT, b"", fin=False) + masked_frame(0, b"", fin=False) * MAX_FRAGMENTS
    assert failed_with(ws.receive_data(stream)) == 1009


# UTF-8, checked incrementally across fragments.


def test_utf8_split_inside_a_character_is_fine() -> None:
    text = "é€😀".encode()
    for cut in range(1, len(text)):
        ws = conn()
        data = masked_frame(OP_TEXT, text[:cut], fin=False) + masked_frame(0, text[cut:])
        assert ws.receive_data(data) == [TextMessage(text)]


def test_invalid_utf8_fails_at_the_fragment_that_carries_it() -> None:
    ws = conn()
    assert ws.receive_data(masked_frame(OP_TEXT, b"ok", fin=False)) == []
    assert failed_with(ws.receive_data(masked_frame(0, b"\xff", fin=False))) == 1007


def test_truncated_utf8_at_the_end_of_a_message_fails() -> None:
    ws = conn()
    data = masked_frame(OP_TEXT, b"ok", fin=False) + masked_frame(0, "€".encode()[:2])
    assert failed_with(ws.receive_data(data)) == 1007


def test_binary_is_not_checked_for_utf8() -> None:
    assert conn().receive_data(masked_frame(OP_BINARY, b"\xff")) == [BinaryMessage(b"\xff")]


# The parser's buffer.


def test_masking_is_an_involution() -> None:
    key = b"\x01\x02\x03\x04"
    payload = bytes(range(256)) * 3 + b"tail"
    assert apply_mask(apply_mask(payload, key), key) == payload
    assert apply_mask(b"", key) == b""
    assert apply_mask(b"\x01\x02\x03\x04\x05", key) == b"\x00\x00\x00\x00\x04"


def test_a_large_frame_in_small_reads_is_appended_not_copied() -> None:
    ws = ServerConnection(1 << 20)
    frame = masked_frame(OP_BINARY, b"z" * (1 << 20))
    buffers = set()
    events: list[Event] = []
    for i in range(0, len(frame), 4096):
        events += ws.receive_data(frame[i : i + 4096])
        buffers.add(id(ws._buffer))
    assert events == [BinaryMessage(b"z" * (1 << 20))]
    # One bytearray grew in place while the frame was incomplete, then the
    # shared empty bytes: no new buffer per read.
    assert len(buffers) == 2
    assert ws._buffer == b""


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=30),
)
def test_any_chunking_gives_the_same_messages(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(masked_frame(OP_BINARY, p) for p in payloads)
    ws = conn()
    events: list[Event] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        events += ws.receive_data(stream[pos : pos + step])
        pos += step
        i += 1
    assert events == [BinaryMessage(x) for x in payloads]


@given(st.binary(max_size=400))
def test_garbage_never_raises(data: bytes) -> None:
    ws = ServerConnection(200)
    ws.receive_data(data)
    ws.data_to_send()


# Frames the server builds.


def test_close_frame_never_cuts_a_character() -> None:
    frame = close_frame(1000, "é" * 100)  # 200 bytes of reason
    assert frame[1] <= 125
    reason = frame[4:]
    assert reason.decode() == "é" * 61  # 122 bytes: the 62nd character would not fit whole
    assert frame[1] == len(frame) - 2


def test_pong_header_agrees_with_its_payload() -> None:
    frame = pong_frame(b"p" * 200)
    assert frame[1] == 125 and len(frame) == 127
