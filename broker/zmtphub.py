"""The broker's XSUB and XPUB spoken in ZMTP on an event loop, without libzmq.

To a peer these are the sockets libzmq would make: publishers (edges' PUB
links, `chat-publish`, any pyzmq PUB) connect to the XSUB side, which
subscribes them to everything; subscribers (edges' SUB links, any SUB)
connect to the XPUB side, and each gets what matches its subscriptions.
What it saves: libzmq does a socket's I/O in a thread of its own, so every
chat woke the broker's I/O thread on its way in, then the broker's loop,
then the I/O thread again on its way out. Here the loop reads and writes
the sockets itself, one wake-up per chat (docs/benchmarks.md, "ZMTP on the
broker's event loop").

What libzmq's XSUB and XPUB did that the broker relied on, kept:
- each subscriber's prefix filter, and a topic's first subscriber and last
  one leaving reported, as XPUB does (`broker.subscribers`);
- heartbeats: a PING every second to every peer, theirs answered, and a
  peer heard nothing from for 3 s dropped;
- a send that never blocks: a subscriber with more than the high-water mark
  (reckoned at `BYTES_PER_MESSAGE` a message) of bytes the kernel has not
  taken yet is skipped and the drop counted, where XPUB dropped at its HWM;
  an edge repairs what it missed from history.

CURVE (docs/security.md) needs libzmq's handshake: `speaks_for` says no when
the broker has a CURVE key, and the broker keeps libzmq's sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import cast

from broker.subscribers import Subscribers
from protocol import zmtp

log = logging.getLogger("broker.zmtp")

HEARTBEAT_IVL = 1.0
HEARTBEAT_TIMEOUT = 3.0  # also how long a handshake may take
BYTES_PER_MESSAGE = 1024  # what the high-water mark's messages are reckoned at

XSUB, XPUB = b"XSUB", b"XPUB"
_PEERS = {XSUB: (b"PUB", b"XPUB"), XPUB: (b"SUB", b"XSUB")}  # who may connect to each
_SUBSCRIBE_ALL = zmtp.subscription(b"", True)

Messages = Callable[[list[list[bytes]]], None]
Subscription = Callable[[bytes, bool], None]


def speaks_for(curve_secret_key: str, *endpoints: str) -> bool:
    """Whether the broker can bind every endpoint itself (no CURVE, plain tcp:// or ipc://)."""
    if curve_secret_key:
        return False
    return all(zmtp.address(endpoint, bind=True) is not None for endpoint in endpoints)


class _Peer(asyncio.Protocol):
    """One connection to one of the two sides: its handshake, and what it says."""

    def __init__(self, hub: ZmtpHub, side: bytes) -> None:
        self.hub = hub
        self.side = side
        self.zmtp = zmtp.Peer()
        self.transport: asyncio.Transport | None = None
        self.ready = False
        self.heard = 0.0  # loop time of the last bytes from the peer (or of connecting)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not its subclasses
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.heard = self.hub.now()
        self.hub.peers.add(self)
        self.transport.write(zmtp.greeting() + zmtp.ready(self.side))

    def data_received(self, data: bytes) -> None:
        hub = self.hub
        self.heard = hub.now()
        try:
            got = self.zmtp.receive(data)
        except zmtp.ZmtpError as exc:
            log.warning("%s peer %s: %s; closing", self.side.decode(), self.name(), exc)
            self.abort()
            return
        messages: list[list[bytes]] = []
        for item in got:
            if type(item) is list:
                messages.append(item)
            elif isinstance(item, zmtp.Ping):
                self.write(zmtp.pong(item.context))
            elif isinstance(item, zmtp.Ready):
                self._handshake_done(item)
        if messages and self.ready:  # not from a peer just refused for its socket type
            if self.side == XSUB:
                hub.on_messages(messages)
            else:
                hub.subscriber_said(self, messages)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.hub.lost(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _handshake_done(self, peer: zmtp.Ready) -> None:
        if peer.socket_type not in _PEERS[self.side]:
            # libzmq refuses these too: most likely an edge's endpoints are swapped.
            log.warning("%s peer %s is a %s socket; closing (is it pointed at the right "
                        "endpoint?)", self.side.decode(), self.name(),
                        peer.socket_type.decode("ascii", "replace"))
            self.abort()
            return
        self.ready = True
        if self.side == XSUB:
            self.write(_SUBSCRIBE_ALL)  # publishers filter: ask for everything

    def name(self) -> str:
        name = self.transport.get_extra_info("peername") if self.transport else None
        return str(name) if name else "(unix socket)"


class ZmtpHub:
    """Both sides' listeners and connections; `send` forwards a pass's messages."""

    def __init__(self, hwm: int, on_messages: Messages, on_subscription: Subscription) -> None:
        """Call from the running loop. `on_messages`: publishers' messages, in arrival
        order, a read's at a time; `on_subscription`: a topic's first subscriber (True)
        and its last one leaving (False)."""
        self.on_messages = on_messages
        self._on_subscription = on_subscription
        self._write_limit = hwm * BYTES_PER_MESSAGE
        self.subscribers: Subscribers[_Peer] = Subscribers()
        self.peers: set[_Peer] = set()
        self.dropped = 0  # messages not sent to a subscriber past its high-water mark
        self._servers: list[asyncio.AbstractServer] = []
        loop = asyncio.get_running_loop()
        self.now = loop.time
        self._beat_handle = loop.call_later(HEARTBEAT_IVL, self._beat)

    async def listen(self, endpoint: str, side: bytes) -> None:
        """Take connections to one side (XSUB or XPUB); OSError if it cannot be bound."""
        self._servers.append(await _listen(endpoint, lambda: _Peer(self, side)))

    def send(self, messages: list[list[bytes]]) -> None:
        """Each message to every subscriber whose filter matches its topic, in order.

        Framed once; written once per subscriber per pass, in one piece.
        """
        if not messages:
            return
        matching = self.subscribers.matching
        due: dict[_Peer, list[bytes]] = {}
        for message in messages:
            peers = matching(message[0])
            if not peers:
                continue
            pieces = zmtp.frames(message)
            for peer in peers:
                pending = due.get(peer)
                if pending is None:
                    due[peer] = pieces.copy() if len(peers) > 1 else pieces
                else:
                    pending += pieces
        limit = self._write_limit
        for peer, pieces in due.items():
            transport = peer.transport
            if transport is None:
                continue
            if limit and transport.get_write_buffer_size() > limit:
                self.dropped += _messages_in(pieces)
                continue
            transport.write(b"".join(pieces))

    def subscriber_said(self, peer: _Peer, messages: list[list[bytes]]) -> None:
        """A subscriber's subscriptions (a first byte of 1) and cancels (0)."""
        subscribers = self.subscribers
        for message in messages:
            if len(message) != 1 or message[0][:1] not in (b"\x00", b"\x01"):
                continue  # XPUB hands anything else to its owner, which has no use for it
            frame = message[0]
            if frame[0] == 1:
                if subscribers.subscribe(peer, frame[1:]):
                    self._on_subscription(frame[1:], True)
            elif subscribers.cancel(peer, frame[1:]):
                self._on_subscription(frame[1:], False)

    def lost(self, peer: _Peer) -> None:
        self.peers.discard(peer)
        if peer.side == XPUB:
            for topic in self.subscribers.drop(peer):
                self._on_subscription(topic, False)

    def _beat(self) -> None:
        now = self.now()
        for peer in list(self.peers):
            if now - peer.heard > HEARTBEAT_TIMEOUT:
                log.warning("%s peer %s: nothing heard for %.0f s; closing",
                            peer.side.decode(), peer.name(), now - peer.heard)
                peer.abort()
            elif peer.ready:
                peer.write(zmtp.ping())
        self._beat_handle = asyncio.get_running_loop().call_later(HEARTBEAT_IVL, self._beat)

    def close(self) -> None:
        self._beat_handle.cancel()
        for server in self._servers:
            server.close()
        for peer in list(self.peers):
            peer.abort()


def _messages_in(pieces: list[bytes]) -> int:
    """How many messages `frames` pieces hold: one per header without MORE."""
    return sum(1 for header in pieces[::2] if not header[0] & 0x01)


async def _listen(endpoint: str, factory: Callable[[], _Peer]) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    address = zmtp.address(endpoint, bind=True)
    if isinstance(address, tuple):
        host, port = address
        return await loop.create_server(factory, host, port, reuse_address=True, backlog=1024)
    if address is None:
        raise ValueError(f"{endpoint}: not a tcp:// or ipc:// endpoint this broker binds itself")
    # ipc://: make the directory (0700: this user's processes only); a socket
    # file a previous run left behind is replaced, as libzmq does.
    os.makedirs(os.path.dirname(address) or ".", mode=0o700, exist_ok=True)
    return await loop.create_unix_server(factory, address, backlog=1024)
