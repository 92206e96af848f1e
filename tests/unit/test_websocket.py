"""The sans-I/O WebSocket frame parser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.frames import masked_frame as mask_frame
from protocol.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Control,
    FrameParser,
    Message,
    Violation,
    unmask,
)


def test_messages_and_controls() -> None:
    p = FrameParser(1000)
    data = (
        mask_frame(OP_TEXT, b'{"type":"ping"}')
        + mask_frame(OP_BINARY, b"\x00\x01")
        + mask_frame(OP_PING, b"hi")
        + mask_frame(OP_PONG, b"")
        + mask_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
    )
    assert p.feed(data) == [
        Message(OP_TEXT, b'{"type":"ping"}'),
        Message(OP_BINARY, b"\x00\x01"),
        Control(OP_PING, b"hi"),
        Control(OP_PONG, b""),
        Control(OP_CLOSE, b"\x03\xe8bye"),
    ]


def test_fragments_with_interleaved_ping() -> None:
    p = FrameParser(1000)
    data = (
        mask_frame(OP_TEXT, b"hel", fin=False)
        + mask_frame(OP_PING, b"p")
        + mask_frame(0x0, b"lo", fin=False)
        + mask_frame(0x0, b"!", fin=True)
    )
    assert p.feed(data) == [Control(OP_PING, b"p"), Message(OP_TEXT, b"hello!")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x81\x02hi", 1002),  # unmasked
        (mask_frame(OP_TEXT, b"x" * 2000), 1009),
        (mask_frame(OP_TEXT, b"x" * 600, fin=False) + mask_frame(0, b"y" * 600), 1009),
        (bytes([0xC1]) + mask_frame(OP_TEXT, b"x")[1:], 1002),  # RSV1 without extension
        (mask_frame(0x3, b"x"), 1002),
        (mask_frame(0xB, b"x"), 1002),
        (mask_frame(0x0, b"x"), 1002),
        (mask_frame(OP_PING, b"x", fin=False), 1002),
        (mask_frame(OP_PING, b"x" * 126), 1002),
        (mask_frame(OP_TEXT, b"a", fin=False) + mask_frame(OP_TEXT, b"b"), 1002),
        (mask_frame(OP_CLOSE, b"\x03"), 1002),
        (mask_frame(OP_CLOSE, struct.pack("!H", 999)), 1002),
        (mask_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002),
        (mask_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
    ],
)
def test_violations(data: bytes, code: int) -> None:
    events = FrameParser(1000).feed(data)
    assert isinstance(events[-1], Violation)
    assert events[-1].code == code


def test_unmask_is_an_involution() -> None:
    key = b"\x01\x02\x03\x04"
    payload = bytes(range(256)) * 3 + b"tail"
    assert unmask(unmask(payload, key), key) == payload
    assert unmask(b"", key) == b""
    assert unmask(b"\x01\x02\x03\x04\x05", key) == b"\x00\x00\x00\x00\x04"


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=30),
)
def test_any_chunking_gives_the_same_messages(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(mask_frame(OP_BINARY, p) for p in payloads)
    p = FrameParser(1000)
    events = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        events += p.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert events == [Message(OP_BINARY, x) for x in payloads]


@given(st.binary(max_size=400))
def test_garbage_never_raises(data: bytes) -> None:
    FrameParser(200).feed(data)


def test_empty_fragments_count_toward_the_size_cap() -> None:
    p = FrameParser(1000)
    stream = mask_frame(OP_TEXT, b"", fin=False) + mask_frame(0x0, b"", fin=False) * 100
    events = p.feed(stream)
    assert isinstance(events[-1], Violation) and events[-1].code == 1009
