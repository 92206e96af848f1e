"""One client WebSocket after the upgrade: a thin asyncio shell around the core.

Per connection an edge keeps this object (with `__slots__`), its transport,
a `Client` value and a sans-I/O `protocol.websocket.ServerConnection`: no
task, no timer, no request or response object. Bytes from the socket go to
the core; what the core says the client sent goes to the `Receiver`; what the
core must send (pongs, pings, close frames) is written out in order. Everything the
server sends a client goes through `send`, replies and fan-out alike, and
that is the one place the outbox is checked.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from edge.session import Client, Disconnect
from protocol.websocket import (
    OPEN,
    BinaryMessage,
    CloseCode,
    CloseReceived,
    Failed,
    Send,
    ServerConnection,
    TextMessage,
)

_FAILURES = {
    CloseCode.MESSAGE_TOO_BIG: Disconnect.TOO_BIG,
    CloseCode.INVALID_DATA: Disconnect.INVALID_UTF8,
}


class Receiver(Protocol):
    """Where a client's messages go (`edge.dispatch`)."""

    def message(self, conn: Connection, data: bytes) -> None: ...
    def binary(self, conn: Connection) -> None: ...


class Lifecycle(Protocol):
    """Who keeps the set of connections (`edge.clients`)."""

    def ended(self, conn: Connection, why: Disconnect) -> None:
        """`conn` stopped being open (its close is decided): leave its rooms, count it."""

    def lost(self, conn: Connection) -> None:
        """Its transport is gone."""


class Connection(asyncio.Protocol):
    __slots__ = ("__weakref__", "client", "ip", "lifecycle", "outbox_bytes", "receiver",
                 "transport", "ws")

    def __init__(
        self,
        client: Client,
        transport: asyncio.Transport,
        ws: ServerConnection,
        receiver: Receiver,
        lifecycle: Lifecycle,
        outbox_bytes: int,
        ip: str = "",
    ) -> None:
        self.client = client
        self.transport = transport
        self.ws = ws
        self.receiver = receiver
        self.lifecycle = lifecycle
        self.outbox_bytes = outbox_bytes  # more queued than this: the client is too slow
        self.ip = ip

    @property
    def conn_id(self) -> str:
        return self.client.connection_id

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        for event in ws.receive_data(data):
            if type(event) is TextMessage:
                self.receiver.message(self, event.data)
            elif type(event) is Send:
                self.send(event.data)
            elif type(event) is BinaryMessage:
                self.receiver.binary(self)
            elif type(event) is CloseReceived:
                self._ended(Disconnect.CLIENT)
            elif type(event) is Failed:
                self._ended(_FAILURES.get(event.code, Disconnect.PROTOCOL_ERROR))
            if not ws.can_send():
                break  # we closed: nothing after that means anything, even in the same read
        self._flush()

    def eof_received(self) -> bool:
        return False  # the peer half-closed: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lifecycle.lost(self)

    # What the server does with it.

    def send(self, data: bytes) -> None:
        """Write frames to the client: the one write path, and the one outbox check."""
        if not self.ws.can_send():
            return  # nothing may follow our close frame
        transport = self.transport
        transport.write(data)
        if transport.get_write_buffer_size() > self.outbox_bytes and self.ws.state is OPEN:
            self.close(CloseCode.TRY_AGAIN_LATER, "too slow: outbox full", Disconnect.SLOW)

    def close(self, code: CloseCode, reason: str, why: Disconnect) -> None:
        """Close from our side: the close frame goes out after what is already queued."""
        if self.ws.state is not OPEN:
            return
        self.ws.send_close(code, reason)
        self._ended(why)

    def heartbeat(self) -> None:
        """Ping; drop the connection if nothing at all came since the last ping."""
        if self.ws.state is not OPEN:
            return  # a closing connection has its own deadline
        if self.ws.heartbeat():
            self._flush()
        else:
            self.lifecycle.ended(self, Disconnect.HEARTBEAT)
            self.transport.abort()

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size()

    # Inside.

    def _ended(self, why: Disconnect) -> None:
        """The core has queued its close frame: send it, then half-close."""
        transport = self.transport
        transport.write(self.ws.data_to_send())
        # FIN after what is queued, but keep reading (and dropping) until the
        # peer closes: closing a socket with unread input sends a reset, and a
        # reset destroys the queued messages and the close frame with them.
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        self.lifecycle.ended(self, why)

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out:
            self.send(out)
