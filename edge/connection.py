"""One client WebSocket after the upgrade: a small asyncio protocol object.

Per connection an edge keeps this object (with `__slots__`), its transport
and a frame parser: no task, no timer, no request or response object. Bytes
from the client go through the sans-I/O parser and the events go to the hub.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edge.auth import Identity
from edge.ratelimit import ConnectionLimits
from protocol.websocket import FrameParser

if TYPE_CHECKING:
    from edge.hub import Hub


class Connection(asyncio.Protocol):
    __slots__ = (
        "__weakref__",
        "close_reason",
        "closer",
        "conn_id",
        "hub",
        "identity",
        "ip",
        "limits",
        "parser",
        "silent",
        "transport",
    )

    def __init__(
        self,
        hub: Hub,
        conn_id: str,
        transport: asyncio.Transport,
        parser: FrameParser,
        identity: Identity | None = None,
        limits: ConnectionLimits | None = None,
        ip: str = "",
    ) -> None:
        self.hub = hub
        self.conn_id = conn_id
        self.transport = transport
        self.parser: FrameParser | None = parser  # None once closing: nothing more to parse
        self.identity = identity  # from the token; None when the edge runs without a secret
        self.limits = limits
        self.ip = ip
        self.silent = False  # no frame from the peer since the last ping
        self.close_reason: str | None = None
        self.closer: asyncio.TimerHandle | None = None  # aborts a close that takes too long

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            return  # closing: read and drop, so unread input never turns into a reset
        hub = self.hub
        for event in parser.feed(data):
            hub.on_event(self, event)
            if self.close_reason is not None:
                return  # frames after a close (in the same read) mean nothing
        hub.check_outbox(self)

    def eof_received(self) -> bool:
        return False  # the peer half-closed: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.forget(self, "abrupt")

    # Used by the hub.

    def write(self, data: bytes) -> None:
        if self.close_reason is None:
            self.transport.write(data)

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size()

    @property
    def sender(self) -> str:
        """`from` on this connection's messages: the token's `sub`, else the connection id."""
        return self.conn_id if self.identity is None else self.identity.sub
