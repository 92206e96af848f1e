"""The sans-I/O WebSocket opening handshake."""

from __future__ import annotations

import pytest

from protocol.handshake import (
    BadRequest,
    accept_key,
    handshake_accept,
    handshake_refusal,
    parse_request_head,
)

HEAD = (
    b"GET /ws?token=abc%20d&x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nOrigin: https://a.example"
)


def test_rfc_accept_key() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake() -> None:
    req = parse_request_head(HEAD)
    assert req.is_websocket_upgrade
    assert req.path == "/ws"
    assert req.query("token") == "abc d"
    assert req.query("nope") is None
    assert req.header("origin") == "https://a.example"
    assert handshake_refusal(req) is None
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in handshake_accept(req)


def test_handshake_refusals() -> None:
    old = parse_request_head(HEAD.replace(b"Version: 13", b"Version: 8"))
    refusal = handshake_refusal(old)
    assert refusal is not None and refusal.startswith(b"HTTP/1.1 426")
    badkey = parse_request_head(HEAD.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short"))
    refusal = handshake_refusal(badkey)
    assert refusal is not None and refusal.startswith(b"HTTP/1.1 400")
    plain = parse_request_head(b"GET / HTTP/1.1\r\nHost: h")
    assert not plain.is_websocket_upgrade
    for bad in (b"GARBAGE", b"GET / HTTP/1.1\r\nno colon here", b"GET /\r\n"):
        with pytest.raises(BadRequest):
            parse_request_head(bad)



def test_a_request_target_that_does_not_parse_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_request_head(b"GET //[x/ws HTTP/1.1\r\nHost: h")
