"""The edge's listening socket: WebSocket upgrades served lean, the rest by aiohttp.

Every accepted TCP connection starts with a `FrontDoor` that reads the
request head. An upgrade to `/` or `/ws` is checked (ready, capacity, origin,
token, per-IP cap), answered with 101 by the sans-I/O handshake, and the
transport is handed to a small `edge.connection.Connection`. Anything else
(the chat page, `/healthz`, `/metrics`, the HTTP API) is handed, bytes and
all, to aiohttp's own request handler.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import cast

from aiohttp import web

from chatconfig import EdgeSettings, Listener
from edge.app import EDGE, GATE, create_app
from edge.guard import Gate, Refusal
from edge.node import Edge
from protocol.handshake import (
    MAX_HEAD_BYTES,
    BadRequest,
    Request,
    handshake_accept,
    handshake_refusal,
    http_response,
    parse_request_head,
)

log = logging.getLogger("edge")

WEBSOCKET_PATHS = frozenset({"/", "/ws"})
_REASONS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}


class FrontDoor(asyncio.Protocol):
    __slots__ = ("deadline", "edge", "gate", "head", "http_factory", "settings", "transport")

    def __init__(
        self,
        edge: Edge,
        gate: Gate,
        http_factory: Callable[[], asyncio.Protocol],
        settings: Listener,
    ) -> None:
        self.edge = edge
        self.settings = settings
        self.gate = gate
        self.http_factory = http_factory
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        # A client that never finishes its request head must not hold a socket forever.
        self.deadline = asyncio.get_running_loop().call_later(
            self.settings.handshake_timeout, self.transport.abort
        )

    def _leave(self) -> None:
        """This connection is decided: no more head reading, no more deadline."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def data_received(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD_BYTES:
                self._answer(http_response(431, "Request Header Fields Too Large"))
            return
        try:
            request = parse_request_head(self.head[:end])
        except BadRequest:
            # Not a valid HTTP/1.x head (control characters included): refused
            # here, not by aiohttp, whose leniency depends on how it was built.
            self._answer(http_response(400, "Bad Request", "malformed request head\n"))
            return
        if request.is_websocket_upgrade and request.path in WEBSOCKET_PATHS:
            self._upgrade(request, self.head[end + 4 :])
        else:
            self._hand_over()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        self.transport = None

    def _hand_over(self) -> None:
        # The deadline stays: a plain HTTP connection (one request, then
        # closed) must be done within the same time, body included.
        self.deadline = None
        transport = self.transport
        assert transport is not None
        protocol = self.http_factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(self.head)
        self.head = b""

    def _answer(self, response: bytes) -> None:
        self._leave()
        assert self.transport is not None
        self.edge.stats.refused[int(response[9:12])] += 1  # "HTTP/1.1 NNN"
        self.transport.write(response)
        self.transport.close()

    def _upgrade(self, request: Request, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        edge = self.edge
        refusal = handshake_refusal(request)
        if refusal is not None:
            return self._answer(refusal)
        if edge.closing or not edge.healthy():
            # What /healthz says: a load balancer should send this client elsewhere.
            return self._answer(http_response(
                503, "Service Unavailable", "edge not ready: broker path down or shutting down\n"
            ))
        if len(edge.clients) >= self.settings.max_connections:
            return self._answer(
                http_response(503, "Service Unavailable", "edge full: too many connections\n")
            )
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else ""
        admitted = self.gate.upgrade(
            request.header("origin"), request.header("authorization"), request.query("token"), ip,
            request.query("user"), request.query("name"),
        )
        if isinstance(admitted, Refusal):
            reason = _REASONS.get(admitted.status, "Refused")
            return self._answer(
                http_response(admitted.status, reason, admitted.text + "\n", **admitted.headers)
            )
        self._leave()
        transport.write(handshake_accept(request, self.settings.subprotocols))
        conn = edge.clients.open(transport, admitted.identity, ip, admitted.user, admitted.name)
        transport.set_protocol(conn)
        self.head = b""
        if rest:
            conn.data_received(rest)


async def serve(settings: EdgeSettings, ready: Callable[[], None] | None = None) -> None:
    """Run an edge until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    listen = settings.listen
    app = create_app(settings)
    # aiohttp only serves short one-request connections here; at shutdown it
    # gets a second, not the clients' grace period, to finish them.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()  # starts the edge and its broker sockets
    edge, gate = app[EDGE], app[GATE]
    http_factory = runner.server
    assert http_factory is not None
    server = await loop.create_server(
        lambda: FrontDoor(edge, gate, http_factory, listen),
        listen.host, listen.port, backlog=4096,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    try:
        await stop.wait()
        log.info("stopping: no new connections; flushing and closing clients")
    finally:
        server.close()  # stop accepting
        await edge.shutdown(listen.shutdown_timeout)
        edge.clients.abort_all()  # what did not close in time
        await runner.cleanup()  # aiohttp's shutdown, then the edge's broker sockets
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
