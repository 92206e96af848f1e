"""The edge's broker links spoken in ZMTP on the event loop, without libzmq.

Each shard gets two connections, as a PUB to the broker's XSUB and as a
SUB to its XPUB, exactly what libzmq's sockets would make, so the broker
cannot tell the difference. What it saves: libzmq runs a socket's I/O in a
thread of its own, so every message woke that thread on its way out and
again on its way in, and then woke the event loop through the socket's
notification FD. Here the loop reads and writes the TCP (or Unix) socket
itself: a chat costs two wake-ups fewer, and an edge's CPU per chat falls
(docs/benchmarks.md, "ZMTP on the edge's event loop").

What libzmq's sockets did that the edge relied on, kept:
- reconnecting after a loss (100 ms, doubling to 1 s), the subscriptions
  sent again on every new connection, and what was published meanwhile
  queued up to the high-water mark and sent once the broker is back;
- heartbeats: a PING every second, and a connection on which nothing was
  heard for 3 s is dropped; the broker's PINGs are answered;
- a dropped connection reported at once (`watch`), as libzmq's monitor did;
- a publisher that never blocks: past the high-water mark (reckoned at
  `BYTES_PER_MESSAGE` a message) of bytes the kernel has not taken yet,
  messages are dropped and counted, where libzmq's PUB dropped at its HWM.

CURVE (docs/security.md) needs libzmq's handshake: `speaks_for` says no to a
link with a CURVE key, and `edge.bus.LibzmqBus` serves it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import cast

from chatconfig import BrokerLink
from edge.bus import Batch, Batches, Bus
from protocol import zmtp

log = logging.getLogger("edge.bus")

RECONNECT_IVL = 0.1
RECONNECT_IVL_MAX = 1.0
HEARTBEAT_IVL = 1.0
HEARTBEAT_TIMEOUT = 3.0  # also how long a connect and its handshake may take
BYTES_PER_MESSAGE = 1024  # what the high-water mark's messages are reckoned at

_PUB, _SUB = b"PUB", b"SUB"
_PEERS = {_PUB: (b"XSUB", b"SUB"), _SUB: (b"XPUB", b"PUB")}  # what each may talk to


def speaks_for(link: BrokerLink) -> bool:
    """Whether every shard's endpoints are plain tcp:// or ipc:// paths (no CURVE)."""
    if link.curve.curve_secret_key:
        return False
    return all(zmtp.address(end) is not None for shard in link.shards() for end in shard)


class _Wire(asyncio.Protocol):
    """One TCP (or Unix) connection of a link: hands what happens on it to the link."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self.transport: asyncio.Transport | None = None
        self.peer = zmtp.Peer()
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not its subclasses
        self._link.made(self)

    def data_received(self, data: bytes) -> None:
        self._link.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.gone.done():
            self.gone.set_result(None)
        self._link.lost(self)


class _Link:
    """One broker socket, as a PUB or a SUB: its connection kept up by `keep`.

    Only the newest wire counts: a wire given up on (its connect timed out)
    may still report its end after the next one is made.
    """

    def __init__(self, endpoint: str, socket_type: bytes, shard: int, hwm: int,
                 on_ready: Callable[[_Link], None],
                 on_messages: Callable[[int, Batch], None] | None,
                 on_lost: Callable[[int], None]) -> None:
        self.endpoint = endpoint
        self.shard = shard
        self.subscriber = on_messages is not None
        self._socket_type = socket_type
        self._address = zmtp.address(endpoint)
        self._on_ready = on_ready
        self._on_messages = on_messages
        self._on_lost = on_lost
        self._hwm = hwm
        self._write_limit = hwm * BYTES_PER_MESSAGE
        self._wire: _Wire | None = None
        self._transport: asyncio.Transport | None = None  # the wire's, once its handshake is done
        self._ready = False  # the current wire's handshake is done (and it was not lost)
        self.heard = 0.0  # loop time of the last bytes from the peer (or of connecting)
        self.waiting: list[bytes] = []  # encoded messages held until the handshake is done
        self.dropped = 0
        self._said_refused = False  # warned of a handshake cut short (once until one succeeds)

    # -- sending -------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """One encoded message; never blocks. Held while not connected, dropped past the HWM."""
        transport = self._transport
        if transport is not None:
            if self._write_limit and transport.get_write_buffer_size() > self._write_limit:
                self.dropped += 1
                return
            transport.write(data)
        elif not self._hwm or len(self.waiting) < self._hwm:
            self.waiting.append(data)
        else:
            self.dropped += 1

    def send_control(self, data: bytes) -> None:
        """A command or a subscription: sent now if connected (each connection resends its own)."""
        if self._transport is not None:
            self._transport.write(data)

    # -- the connection's life ----------------------------------------------

    async def keep(self) -> None:
        """Connect, and connect again after every loss, until cancelled."""
        pause = RECONNECT_IVL
        while True:
            wire = self._wire = _Wire(self)
            try:
                await asyncio.wait_for(self._connect(wire), HEARTBEAT_TIMEOUT)
            except (TimeoutError, OSError) as exc:
                self._wire = None  # a connect that completes after all is not this link's
                log.debug("broker link %s: cannot connect: %s", self.endpoint, exc)
            except Exception:  # whatever it is, this link keeps trying and the others go on
                self._wire = None
                log.exception("broker link %s: connecting failed", self.endpoint)
            else:
                await wire.gone
                if wire.peer.ready:
                    pause = RECONNECT_IVL  # it worked: the next loss starts the backoff again
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECONNECT_IVL_MAX)

    async def _connect(self, wire: _Wire) -> None:
        loop = asyncio.get_running_loop()
        address = self._address
        if isinstance(address, tuple):
            await loop.create_connection(lambda: wire, address[0], address[1])
        elif address is not None:
            await loop.create_unix_connection(lambda: wire, address)

    def made(self, wire: _Wire) -> None:
        if wire is not self._wire:
            assert wire.transport is not None
            wire.transport.abort()
            return
        transport = wire.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.heard = asyncio.get_running_loop().time()
        transport.write(zmtp.greeting() + zmtp.ready(self._socket_type))

    def received(self, wire: _Wire, data: bytes) -> None:
        if wire is not self._wire:
            return
        self.heard = asyncio.get_running_loop().time()
        try:
            got = wire.peer.receive(data)
        except zmtp.ZmtpError as exc:
            log.warning("broker link %s: %s; reconnecting", self.endpoint, exc)
            self.abort()
            return
        messages: Batch = []
        for item in got:
            if type(item) is list:
                messages.append(item)
            elif isinstance(item, zmtp.Ping):
                self.send_control(zmtp.pong(item.context))
            elif isinstance(item, zmtp.Ready):
                self._handshake_done(wire, item)
        if messages and self._on_messages is not None:
            self._on_messages(self.shard, messages)

    def _handshake_done(self, wire: _Wire, peer: zmtp.Ready) -> None:
        if peer.socket_type not in _PEERS[self._socket_type]:
            # libzmq would refuse it too: most likely the two endpoints are swapped.
            log.error("broker link %s: the peer is a %s socket, not a %s; is this the right "
                      "endpoint?", self.endpoint, peer.socket_type.decode("ascii", "replace"),
                      " or ".join(t.decode() for t in _PEERS[self._socket_type]))
            self.abort()
            return
        transport = self._transport = wire.transport
        assert transport is not None
        self._ready = True
        self._said_refused = False
        self._on_ready(self)
        if self.waiting:
            transport.write(b"".join(self.waiting))
            self.waiting = []

    def lost(self, wire: _Wire) -> None:
        if wire is not self._wire:
            return
        was_ready, self._ready = self._ready, False
        self._transport = None
        if not was_ready and not self._said_refused:
            # libzmq closes without a word on a peer of the wrong socket type.
            self._said_refused = True
            # So does a CURVE broker to a plain peer, before saying it wants CURVE.
            log.warning("broker link %s: closed during the ZMTP handshake; is it the broker's "
                        "%s socket, and does the broker want CURVE (--curve-secret-key)?",
                        self.endpoint, " or ".join(t.decode() for t in _PEERS[self._socket_type]))
        if was_ready:
            self._on_lost(self.shard)

    def abort(self) -> None:
        # From now on what is published waits for the next connection (or
        # is counted as dropped), not written to a transport on its way out.
        self._transport = None
        wire = self._wire
        if wire is not None and wire.transport is not None:
            wire.transport.abort()

    def beat(self, now: float, late: bool) -> None:
        """Each HEARTBEAT_IVL: ping, or drop a link gone silent (or stuck in its handshake).

        `late`: the loop itself was held up, and what the peer sent meanwhile
        may be unread yet; silence is not judged on this beat.
        """
        wire = self._wire
        if wire is None or wire.transport is None:
            return
        if late:
            self.heard = max(self.heard, now - HEARTBEAT_IVL)
        if now - self.heard > HEARTBEAT_TIMEOUT:
            log.warning("broker link %s: nothing heard for %.0f s; reconnecting",
                        self.endpoint, now - self.heard)
            self.abort()
        elif self._transport is not None:
            self._transport.write(zmtp.ping())


class ZmtpBus(Bus):
    """Every shard's PUB and SUB link, spoken in ZMTP on the running loop."""

    def __init__(self, link: BrokerLink) -> None:
        shards = link.shards()
        super().__init__(len(shards))
        hwm = link.endpoints.hwm
        self._pubs = [
            _Link(shard.pub, _PUB, i, hwm, self._ready, None, self._lost)
            for i, shard in enumerate(shards)
        ]
        self._subs = [
            _Link(shard.sub, _SUB, i, hwm, self._ready, self._arrived, self._lost)
            for i, shard in enumerate(shards)
        ]
        self._subscriptions: list[Counter[bytes]] = [Counter() for _ in shards]
        self._on_batch: Callable[[Batches], None] | None = None
        self._on_disconnect: Callable[[int], None] | None = None
        self._pending: dict[int, Batch] = {}  # several shards: what one flush will deliver
        self._tasks: list[asyncio.Task[None]] = []
        self._beat_handle: asyncio.TimerHandle | None = None
        self._beat_due = 0.0

    @property
    def dropped(self) -> int:
        """Messages dropped at the high-water mark, on every shard's publishing link."""
        return sum(pub.dropped for pub in self._pubs)

    def publish(self, topic: bytes, body: bytes, shard: int | None = None) -> None:
        self._pubs[self._publish_shard(topic, shard)].send(zmtp.message([topic, body]))

    def publish_many(self, topic: bytes, bodies: list[bytes], shard: int | None = None) -> None:
        self._pubs[self._publish_shard(topic, shard)].send(zmtp.message([topic, *bodies]))

    def subscribe(self, topic: bytes) -> None:
        for i in self._subscribed_at(topic):
            counts = self._subscriptions[i]
            counts[topic] += 1
            if counts[topic] == 1:
                self._subs[i].send_control(zmtp.subscription(topic, True))

    def unsubscribe(self, topic: bytes) -> None:
        # Counted, as libzmq's SUB counts them: the cancel goes once the last is gone.
        for i in self._subscribed_at(topic):
            counts = self._subscriptions[i]
            if counts[topic] <= 0:
                continue
            counts[topic] -= 1
            if counts[topic] == 0:
                del counts[topic]
                self._subs[i].send_control(zmtp.subscription(topic, False))

    def _ready(self, link: _Link) -> None:
        # A new connection knows none of our subscriptions: send them all.
        if link.subscriber:
            topics = self._subscriptions[link.shard]
            if topics:
                link.send_control(
                    b"".join(zmtp.subscription(topic, True) for topic in topics))

    def _lost(self, shard: int) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect(shard)

    def _arrived(self, shard: int, batch: Batch) -> None:
        on_batch = self._on_batch
        if on_batch is None:
            return
        if self.shards == 1:
            self._deliver(on_batch, [(shard, batch)])
            return
        # Several shards: what arrives from each in one turn of the loop is
        # fanned out in one pass (one write per member, not one per shard).
        pending = self._pending
        if not pending:
            asyncio.get_running_loop().call_soon(self._flush)
        held = pending.get(shard)
        if held is None:
            pending[shard] = batch
        else:
            held.extend(batch)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        if pending and self._on_batch is not None:
            self._deliver(self._on_batch, list(pending.items()))

    @staticmethod
    def _deliver(on_batch: Callable[[Batches], None], batches: Batches) -> None:
        try:
            on_batch(batches)
        except Exception:  # a bug in the fan-out must not drop the broker link
            log.exception("delivering the broker's messages failed")

    async def run(self, on_batch: Callable[[Batches], None]) -> None:
        """Connect every link, keep them up and deliver what arrives, until cancelled."""
        self._on_batch = on_batch
        loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(link.keep(), name=f"broker-link {link.endpoint}")
            for link in (*self._pubs, *self._subs)
        ]
        self._beat_due = loop.time() + HEARTBEAT_IVL
        self._beat_handle = loop.call_at(self._beat_due, self._beat)
        try:
            await asyncio.gather(*self._tasks)
        finally:
            if self._beat_handle is not None:
                self._beat_handle.cancel()
            for task in self._tasks:
                task.cancel()
            self._on_batch = None

    def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Timers run before the loop polls its sockets: after a stall, PONGs
        # may be waiting unread, so a late beat does not judge silence.
        late = now - self._beat_due > HEARTBEAT_IVL / 2
        for link in (*self._pubs, *self._subs):
            link.beat(now, late)
        self._beat_due = now + HEARTBEAT_IVL
        self._beat_handle = loop.call_at(self._beat_due, self._beat)

    async def watch(self, on_disconnect: Callable[[int], None]) -> None:
        self._on_disconnect = on_disconnect
        try:
            await asyncio.Future()  # runs until cancelled
        finally:
            self._on_disconnect = None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for link in (*self._pubs, *self._subs):
            link.abort()
