"""The client-side frame builder: what the bench and test clients send."""

from __future__ import annotations

import pytest

from protocol.frames import apply_mask, masked_frame
from protocol.websocket import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    BinaryMessage,
    ServerConnection,
    TextMessage,
)


def test_header_bits_and_key() -> None:
    key = b"\x01\x02\x03\x04"
    frame = masked_frame(OP_TEXT, b"hello", mask=key)
    assert frame[0] == 0x81 and frame[1] == 0x80 | 5
    assert frame[2:6] == key
    assert apply_mask(frame[6:], key) == b"hello"
    assert masked_frame(OP_PING, b"", fin=False, rsv=4, mask=key)[:2] == b"\x49\x80"
    assert masked_frame(OP_TEXT, b"", rsv=1)[0] == 0x91


@pytest.mark.parametrize(
    ("size", "length_bytes"),
    [(0, 0), (125, 0), (126, 2), (65535, 2), (65536, 8)],
)
def test_lengths_use_the_shortest_form(size: int, length_bytes: int) -> None:
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    frame = masked_frame(OP_BINARY, payload)
    assert len(frame) == 2 + length_bytes + 4 + size
    assert ServerConnection(1 << 20).receive_data(frame) == [BinaryMessage(payload)]


def test_the_server_parser_reads_fragments_built_here() -> None:
    stream = (
        masked_frame(OP_TEXT, b"hel", fin=False)
        + masked_frame(OP_CONTINUATION, b"lo", fin=False)
        + masked_frame(OP_CONTINUATION, b"!")
    )
    assert ServerConnection(1000).receive_data(stream) == [TextMessage(b"hello!")]
