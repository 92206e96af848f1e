"""The sans-I/O WebSocket opening handshake."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.handshake import (
    BadRequest,
    accept_key,
    handshake_accept,
    handshake_refusal,
    parse_request_head,
    select_subprotocol,
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


def upgrade_head(*lines: bytes, version: bytes = b"HTTP/1.1", without: bytes = b"") -> bytes:
    """An upgrade head: default field lines, less those `lines` or `without` name."""
    fields = {
        b"host": b"Host: h",
        b"upgrade": b"Upgrade: websocket",
        b"connection": b"Connection: Upgrade",
        b"sec-websocket-key": b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"sec-websocket-version": b"Sec-WebSocket-Version: 13",
    }
    names = {line.split(b":")[0].lower() for line in lines} | {without}
    kept = [line for name, line in fields.items() if name not in names]
    return b"\r\n".join([b"GET /ws " + version, *kept, *lines])


def status(response: bytes | None) -> int | None:
    return None if response is None else int(response[9:12])


def test_the_default_upgrade_head_is_accepted() -> None:
    req = parse_request_head(upgrade_head())
    assert req.is_websocket_upgrade and handshake_refusal(req) is None


@pytest.mark.parametrize(
    "lines",
    [
        (b"Upgrade: websocket, h2c",),
        (b"Upgrade: h2c, websocket",),
        (b"Upgrade: h2c,WebSocket , ",),
        (b"Connection: keep-alive, Upgrade",),
        (b"Connection: Upgrade, keep-alive",),
        (b"Connection: UPGRADE",),
        (b"Connection: keep-alive", b"Connection: Upgrade"),  # two lines are one list
        (b"Upgrade: h2c", b"Upgrade: websocket"),
    ],
)
def test_upgrade_and_connection_are_case_insensitive_token_lists(lines: tuple[bytes, ...]) -> None:
    req = parse_request_head(upgrade_head(*lines))
    assert req.is_websocket_upgrade
    assert handshake_refusal(req) is None


@pytest.mark.parametrize(
    "lines",
    [
        (b"Upgrade: h2c",),
        (b"Upgrade: websocketx",),
        (b"Upgrade: websocket/13x, h2c",),
        (b"Connection: keep-alive",),
        (b"Connection: upgrade-insecure-requests",),
    ],
)
def test_other_upgrade_or_connection_tokens_are_not_an_upgrade(lines: tuple[bytes, ...]) -> None:
    assert not parse_request_head(upgrade_head(*lines)).is_websocket_upgrade


def test_repeated_field_lines_are_joined_as_a_list() -> None:
    req = parse_request_head(upgrade_head(b"X-A: 1  ", b"x-a:\t2"))
    assert req.headers["x-a"] == "1, 2"  # OWS around each value trimmed
    assert ("x-a", "1") in req.fields and ("x-a", "2") in req.fields


def test_an_http_1_0_upgrade_is_not_an_upgrade() -> None:
    # RFC 9110 section 7.8: Upgrade in an HTTP/1.0 request is ignored, so the
    # request is a plain one (served by aiohttp), not a refused handshake.
    req = parse_request_head(upgrade_head(version=b"HTTP/1.0"))
    assert req.version == (1, 0)
    assert not req.is_websocket_upgrade
    assert parse_request_head(upgrade_head()).version == (1, 1)


@pytest.mark.parametrize("version", [b"HTTP/0.9", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/1.1 "])
def test_only_http_1_x_request_lines_parse(version: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request_head(upgrade_head(version=version))


def test_not_a_get_is_not_an_upgrade() -> None:
    head = upgrade_head().replace(b"GET ", b"POST ", 1)
    assert not parse_request_head(head).is_websocket_upgrade


@pytest.mark.parametrize(
    "lines",
    [
        (),  # no Host at all
        (b"Host: h", b"Host: h"),
        (b"Host: a", b"Host: b"),
        (b"Host: a\tb",),
        (b"Host: a b",),
        (b"Host: user@h",),
        (b"Host: h/ws",),
        (b"Host: h:80x",),
        (b"Host: h\xe9",),
    ],
)
def test_an_upgrade_needs_exactly_one_valid_host(lines: tuple[bytes, ...]) -> None:
    req = parse_request_head(upgrade_head(*lines, without=b"host"))
    assert req.is_websocket_upgrade
    refusal = handshake_refusal(req)
    assert status(refusal) == 400
    assert refusal is not None and b"Host" in refusal


@pytest.mark.parametrize(
    "host", [b"h", b"chat.example.com:8080", b"127.0.0.1:1", b"[::1]:80", b"xn--bcher-kva.de", b""]
)
def test_valid_hosts_pass(host: bytes) -> None:
    req = parse_request_head(upgrade_head(b"Host: " + host))
    assert handshake_refusal(req) is None


@pytest.mark.parametrize(
    "ctl", [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x1f", b"\x7f", b"\r", b"\n"]
)
@pytest.mark.parametrize("name", [b"Host", b"Origin", b"X-Other"])
def test_control_characters_in_field_values_are_refused(ctl: bytes, name: bytes) -> None:
    # Refused, not replaced with SP (RFC 9110 section 5.5 allows either):
    # the front door answers 400 for any head that does not parse.
    with pytest.raises(BadRequest):
        parse_request_head(upgrade_head(name + b": a" + ctl + b"b"))


def test_htab_and_obs_text_in_other_values_are_kept() -> None:
    req = parse_request_head(upgrade_head(b"User-Agent: a\tb\xe9"))
    assert req.header("user-agent") == "a\tb\u00e9"
    assert handshake_refusal(req) is None


def test_426_names_the_protocol_to_upgrade_to() -> None:
    refusal = handshake_refusal(parse_request_head(upgrade_head(b"Sec-WebSocket-Version: 8")))
    assert refusal is not None
    head = refusal.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 426 Upgrade Required"
    assert b"Upgrade: websocket" in head
    assert b"Sec-WebSocket-Version: 13" in head
    # RFC 9110 section 7.8: a sender of Upgrade also sends the upgrade option.
    assert b"Connection: Upgrade, close" in head


def test_other_refusals_just_close() -> None:
    refusal = handshake_refusal(parse_request_head(upgrade_head(b"Sec-WebSocket-Key: x")))
    assert refusal is not None and b"Connection: close\r\n" in refusal
    assert b"Upgrade:" not in refusal


def test_no_subprotocol_configured_selects_none_and_still_accepts() -> None:
    req = parse_request_head(upgrade_head(b"Sec-WebSocket-Protocol: chat, superchat"))
    assert handshake_refusal(req) is None
    assert select_subprotocol(req, ()) is None
    response = handshake_accept(req)
    assert response.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol" not in response
    assert response.endswith(b"\r\n\r\n") and response.count(b"\r\n\r\n") == 1


def test_the_server_selects_one_offered_subprotocol_in_its_own_order() -> None:
    req = parse_request_head(
        upgrade_head(b"Sec-WebSocket-Protocol: v1.chat", b"Sec-WebSocket-Protocol: v2.chat , x")
    )
    response = handshake_accept(req, subprotocols=("v2.chat", "v1.chat"))
    assert b"\r\nSec-WebSocket-Protocol: v2.chat\r\n\r\n" in response
    assert response.count(b"Sec-WebSocket-Protocol") == 1
    assert select_subprotocol(req, ["v1.chat", "v2.chat"]) == "v1.chat"
    assert select_subprotocol(req, ["V2.CHAT"]) is None  # names are compared exactly
    assert select_subprotocol(req, ["other"]) is None
    plain = parse_request_head(upgrade_head())
    assert select_subprotocol(plain, ["v1.chat"]) is None
    assert b"Sec-WebSocket-Protocol" not in handshake_accept(plain, ["v1.chat"])


def test_a_second_request_head_is_refused() -> None:
    with pytest.raises(BadRequest):
        parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /ws HTTP/1.1\r\nHost: h")


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.builds(lambda tail: upgrade_head() + tail, st.binary()))
def test_any_bytes_parse_or_are_a_bad_request(head: bytes) -> None:
    try:
        req = parse_request_head(head)
    except BadRequest:
        return
    # Nothing the front door then asks of the request raises either.
    assert req.path
    req.query("token")
    if req.is_websocket_upgrade and handshake_refusal(req) is None:
        assert handshake_accept(req, ["chat"]).startswith(b"HTTP/1.1 101 ")
