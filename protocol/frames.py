"""Server-to-client WebSocket frames (RFC 6455), built once and shared.

Server frames are never masked, so with compression off the bytes of a frame
are the same for every recipient: an edge builds one frame per message and
writes it to every member's transport.
"""

from __future__ import annotations

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
