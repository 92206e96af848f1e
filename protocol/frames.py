"""Server-to-client WebSocket frames (RFC 6455), built once and shared.

Server frames are never masked, so with compression off the bytes of a frame
are the same for every recipient: an edge builds one frame per message and
writes it to every member's transport.
"""

from __future__ import annotations

import os
import struct

_TEXT_FIN = 0x81
_PING_FIN = 0x89


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final text frame carrying `payload` (UTF-8 JSON)."""
    return _header(_TEXT_FIN, len(payload)) + payload


PING_FRAME = _header(_PING_FIN, 0)


MAX_CLOSE_REASON = 123  # a control frame carries 125 bytes, two of them the code


def close_frame(code: int, reason: str) -> bytes:
    """A close frame; a long reason is cut to 123 bytes, never inside a character."""
    text = reason.encode()
    if len(text) > MAX_CLOSE_REASON:
        # Dropping the bytes of a cut character keeps the reason valid UTF-8.
        text = text[:MAX_CLOSE_REASON].decode(errors="ignore").encode()
    payload = struct.pack("!H", code) + text
    return _header(0x88, len(payload)) + payload


def pong_frame(payload: bytes) -> bytes:
    """A pong echoing a ping's payload (at most 125 bytes; longer is cut before the header)."""
    body = payload[:125]
    return _header(0x8A, len(body)) + body



def masked_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """A client-to-server frame: clients must mask every frame (RFC 6455 section 5.3).

    `rsv` is the three reserved bits as a number (4 is RSV1, 1 is RSV3); only
    a client testing a server's refusals sets them. `mask` is the 4-byte key,
    random when not given; a client may reuse one key for all its frames.
    """
    key = os.urandom(4) if mask is None else mask
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0x0F
    header = bytearray(_header(first, len(payload)))
    header[1] |= 0x80
    return bytes(header) + key + apply_mask(payload, key)


def apply_mask(payload: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """XOR with the repeated 4-byte key; the same call masks and unmasks."""
    n = len(payload)
    if n == 0:
        return b""
    # One big-integer XOR, done in C: no Python loop per byte.
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
