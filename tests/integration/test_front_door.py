"""The front door: what a connection gets before it is a WebSocket."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tests.support.procs import Cluster

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
)


def response_head(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, read the response head, hang up (a 101 would stay open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out.split(b"\r\n\r\n")[0]


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_http_is_one_request_per_connection(shared_cluster: Cluster) -> None:
    port = shared_cluster.edges[0].port
    reply = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    head = reply.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert b"connection: close" in head  # and the server did close: exchange() returned
    missing = exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404")


def test_upgrade_refusals(shared_cluster: Cluster) -> None:
    port = shared_cluster.edges[0].port
    old = exchange(port, UPGRADE.format(path="/", version="8").encode())
    assert old.startswith(b"HTTP/1.1 426") and b"Sec-WebSocket-Version: 13" in old
    assert b"\r\nUpgrade: websocket\r\n" in old  # RFC 9110 section 15.5.22
    badkey = exchange(port, UPGRADE.format(path="/ws", version="13").replace(
        "dGhlIHNhbXBsZSBub25jZQ==", "short").encode())
    assert badkey.startswith(b"HTTP/1.1 400")
    elsewhere = exchange(port, UPGRADE.format(path="/other", version="13").encode())
    assert elsewhere.startswith(b"HTTP/1.1 404")
    huge = exchange(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000)
    assert huge.startswith(b"HTTP/1.1 431")


def test_an_unfinished_request_head_is_dropped(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(edges=1, edge_args=["--handshake-timeout", "0.3"])
    port = cluster.edges[0].port
    # Half a request, then silence: the edge hangs up instead of waiting forever.
    assert exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n", timeout=10) == b""


def test_refusals_close_the_connection_too(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(edges=1, env={"CHAT_JWT_SECRET": "s" * 32})
    port = cluster.edges[0].port
    # 401 from the HTTP side, then an upgrade on the same connection: it must
    # never reach aiohttp, so the connection ends after the first answer.
    reply = exchange(
        port,
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        + UPGRADE.format(path="/ws", version="13").encode(),
    )
    assert reply.startswith(b"HTTP/1.1 401")
    assert reply.count(b"HTTP/1.1 ") == 1


def test_a_target_that_does_not_parse_gets_a_clean_answer(shared_cluster: Cluster) -> None:
    # The front door refuses to parse it and answers 400 itself, as it does
    # for any head that is not valid HTTP/1.x, upgrade or not.
    port = shared_cluster.edges[1].port
    reply = exchange(port, UPGRADE.format(path="//[x/ws", version="13").encode())
    assert reply.startswith(b"HTTP/1.1 400 ")
    reply = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_upgrade_and_connection_are_token_lists(shared_cluster: Cluster) -> None:
    port = shared_cluster.edges[2].port
    plain = UPGRADE.format(path="/ws", version="13")
    for variant in (
        plain.replace("Upgrade: websocket", "Upgrade: websocket, h2c"),
        plain.replace("Upgrade: websocket", "Upgrade: h2c, WebSocket"),
        plain.replace("Connection: Upgrade", "Connection: keep-alive, Upgrade"),
        plain.replace("Connection: Upgrade", "Connection: keep-alive\r\nConnection: upgrade"),
    ):
        head = response_head(port, variant.encode())
        assert head.startswith(b"HTTP/1.1 101 "), (variant, head)


def test_an_offered_subprotocol_with_none_configured_still_upgrades(
    shared_cluster: Cluster,
) -> None:
    offer = UPGRADE.format(path="/ws", version="13").replace(
        "Host: x\r\n", "Host: x\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    )
    head = response_head(shared_cluster.edges[2].port, offer.encode())
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-protocol" not in head.lower()


def test_malformed_upgrades_get_400(shared_cluster: Cluster) -> None:
    port = shared_cluster.edges[2].port
    plain = UPGRADE.format(path="/ws", version="13")
    for variant in (
        plain.replace("Host: x\r\n", ""),
        plain.replace("Host: x\r\n", "Host: x\r\nHost: y\r\n"),
        plain.replace("Host: x", "Host: x\x00y"),
        plain.replace("Host: x", "Host: x\x01y"),
        plain.replace("Host: x", "Host: x y"),
        plain.replace("Host: x", "Host: x\r\nOrigin: http://x\x7f"),
        plain.replace("Host: x", "Host: x\r\nX-Other: a\x1bb"),
    ):
        reply = exchange(port, variant.encode("latin-1"))
        assert reply.startswith(b"HTTP/1.1 400 "), (variant, reply)
        assert reply.count(b"HTTP/1.1 ") == 1


def test_an_http_1_0_upgrade_is_a_plain_request(shared_cluster: Cluster) -> None:
    # RFC 9110 section 7.8: Upgrade is ignored in HTTP/1.0, so "/" serves the page.
    request = UPGRADE.format(path="/", version="13").replace("HTTP/1.1", "HTTP/1.0")
    reply = exchange(shared_cluster.edges[2].port, request.encode())
    status_line = reply.split(b"\r\n")[0]
    assert status_line.endswith(b" 200 OK"), status_line
    assert b"<html" in reply.lower()


def test_a_configured_subprotocol_is_selected(shared_cluster: Cluster) -> None:
    edge = shared_cluster.start_edge(args=["--subprotocols", "roomcast.v2,roomcast.v1"])
    try:
        edge.wait_healthy()
        offer = UPGRADE.format(path="/ws", version="13").replace(
            "Host: x\r\n", "Host: x\r\nSec-WebSocket-Protocol: other, roomcast.v1, roomcast.v2\r\n"
        )
        head = response_head(edge.port, offer.encode())
        assert head.startswith(b"HTTP/1.1 101 ")
        # The server's own order of preference decides among what was offered.
        assert b"\r\nSec-WebSocket-Protocol: roomcast.v2" in head
        unknown = offer.replace("other, roomcast.v1, roomcast.v2", "other")
        head = response_head(edge.port, unknown.encode())
        assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol" not in head
    finally:
        edge.proc.stop()
        shared_cluster.edges.remove(edge)
