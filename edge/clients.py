"""The edge's connections, from upgrade to gone: the one owner of that set.

It opens a `Connection` for each accepted upgrade, and is told when one
stops being open (its rooms are then left at once) and when its transport
is gone. Time-driven endings are sweeps over the set instead of a timer per
connection: heartbeats, expired tokens, and closes that the peer never
finished within `CLOSE_GRACE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from edge.auth import Deadlines, Identity
from edge.connection import Connection, Receiver
from edge.guard import Gate
from edge.metrics import Stats
from edge.ratelimit import ConnectionLimits
from edge.session import Client, Disconnect
from protocol.ids import Sequence
from protocol.websocket import CloseCode, ServerConnection

log = logging.getLogger("edge")

CLOSE_GRACE = 5.0  # seconds a closing connection gets to flush before it is aborted


class Clients:
    def __init__(
        self,
        ids: Sequence,
        receiver: Receiver,
        leave_rooms: Callable[[Connection, Disconnect], None],
        new_limits: Callable[[], ConnectionLimits | None],
        stats: Stats,
        *,
        max_message_bytes: int,
        outbox_bytes: int,
        gate: Gate | None = None,
    ) -> None:
        self._ids = ids
        self._receiver = receiver
        self._leave_rooms = leave_rooms
        self._new_limits = new_limits
        self._stats = stats
        self._max_message_bytes = max_message_bytes
        self._outbox_bytes = outbox_bytes
        self._gate = gate
        self.open_ones: set[Connection] = set()  # open: not yet closing
        self.all: set[Connection] = set()  # open or closing: their transports still exist
        self._expiries: Deadlines[Connection] = Deadlines()  # token exp
        self._closing: Deadlines[Connection] = Deadlines()  # abort if not gone by then
        self._all_gone: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self.all)

    def open(
        self, transport: asyncio.Transport, identity: Identity | None = None, ip: str = "",
        user: str | None = None, name: str | None = None,
    ) -> Connection:
        client = Client(self._ids.next(), identity, self._new_limits(), user, name)
        conn = Connection(
            client, transport, ServerConnection(self._max_message_bytes),
            self._receiver, self, self._outbox_bytes, ip,
        )
        if identity is not None:
            self._expiries.set(conn, identity.exp)
        self.open_ones.add(conn)
        self.all.add(conn)
        self._stats.connections_total += 1
        return conn

    # Lifecycle, as told by each connection.

    def ended(self, conn: Connection, why: Disconnect) -> None:
        if conn not in self.open_ones:
            return
        self.open_ones.discard(conn)
        self._expiries.discard(conn)
        self._stats.disconnects[why] += 1
        if why not in (Disconnect.SHUTDOWN, Disconnect.ABRUPT, Disconnect.CLIENT):
            log.info("closing %s (%s), %d bytes still queued", conn.conn_id, why, conn.backlog())
        self._leave_rooms(conn, why)
        self._closing.set(conn, time.monotonic() + CLOSE_GRACE)

    def lost(self, conn: Connection) -> None:
        self.ended(conn, Disconnect.ABRUPT)
        if conn not in self.all:
            return
        self.all.discard(conn)
        self._closing.discard(conn)
        if self._gate is not None:
            self._gate.release(conn.ip)
        if not self.all and self._all_gone is not None:
            self._all_gone.set()

    # Sweeps.

    def heartbeat(self) -> None:
        """One sweep over every open connection instead of a timer per connection."""
        for conn in list(self.open_ones):
            conn.heartbeat()

    def tick(self) -> None:
        for conn in self._expiries.pop_due(time.time()):
            conn.close(CloseCode.TOKEN_EXPIRED, "token expired", Disconnect.TOKEN_EXPIRED)
        for conn in self._closing.pop_due(time.monotonic()):
            if conn.backlog():
                log.info("aborting %s: %d bytes not taken in %.0f s",
                         conn.conn_id, conn.backlog(), CLOSE_GRACE)
            conn.transport.abort()

    async def close_all(self, deadline: float) -> None:
        """Close every client with 1001 at once, then wait (until `deadline`) for them to go."""
        self._all_gone = asyncio.Event()
        for conn in list(self.open_ones):
            conn.close(CloseCode.GOING_AWAY, "server shutting down", Disconnect.SHUTDOWN)
        if self.all:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), deadline - time.monotonic())

    def abort_all(self) -> None:
        for conn in list(self.all):
            conn.transport.abort()
