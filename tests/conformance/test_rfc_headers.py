"""Frames RFC 6455 lets a server refuse from their header alone.

Each case sends a header (with its masking key, if any) and never the
payload it announces: the edge must fail the connection with 1002 as soon
as the header is read, not wait for bytes that prove nothing more. A
server that waits is a server a client can hold with a header that
promises 64 KiB and never sends it.
"""

from __future__ import annotations

import pytest

from protocol.websocket import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT
from tests.conformance.peer import Peer
from tests.support.rawws import malformed_frame


@pytest.mark.parametrize(
    "header",
    [
        # Section 5.5: control frames carry at most 125 bytes, so a control
        # header with a 16- or 64-bit length is wrong whatever follows.
        pytest.param(malformed_frame(OP_PING, length=126), id="rfc-5.5-ping-126"),
        pytest.param(malformed_frame(OP_CLOSE, length=300), id="rfc-5.5-close-300"),
        pytest.param(malformed_frame(OP_PING, length=70_000), id="rfc-5.5-ping-64bit"),
        # Section 5.2: opcodes 3-7 and 11-15 are reserved.
        pytest.param(malformed_frame(0x3, length=10), id="rfc-5.2-opcode-3"),
        pytest.param(malformed_frame(0xB, length=10), id="rfc-5.2-opcode-11"),
        # Section 5.2: "the minimal number of bytes MUST be used to encode the length".
        pytest.param(malformed_frame(OP_TEXT, length=5, length_bytes=2), id="rfc-5.2-16bit-5"),
        pytest.param(malformed_frame(OP_TEXT, length=125, length_bytes=2),
                     id="rfc-5.2-16bit-125"),
        pytest.param(malformed_frame(OP_TEXT, length=5, length_bytes=8), id="rfc-5.2-64bit-5"),
        pytest.param(malformed_frame(OP_BINARY, length=65535, length_bytes=8),
                     id="rfc-5.2-64bit-65535"),
        # Section 5.2: "the most significant bit MUST be 0" in a 64-bit length.
        pytest.param(malformed_frame(OP_TEXT, length=1 << 63), id="rfc-5.2-top-bit"),
        pytest.param(malformed_frame(OP_BINARY, length=(1 << 63) | 5), id="rfc-5.2-top-bit-5"),
        # Section 5.2: reserved bits without an extension; 5.1: clients mask.
        pytest.param(malformed_frame(OP_TEXT, rsv=4, length=10), id="rfc-5.2-rsv1"),
        pytest.param(malformed_frame(OP_TEXT, length=10, masked=False), id="rfc-5.1-unmasked"),
    ],
)
def test_refused_from_the_header(ws: Peer, header: bytes) -> None:
    ws.send(header)
    ws.expect_close(1002)
