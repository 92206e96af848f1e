"""The edge's two ZeroMQ sockets to the broker, on the aiohttp event loop.

Reading drains the SUB socket in bounded batches with non-blocking reads and
yields to the event loop between batches: a plain `await recv()` loop never
yields while messages are queued, so a flood from the broker would starve the
WebSockets.

Both sockets live on the aiohttp event loop. ZeroMQ tells the loop through
its notification FD (registered once with `add_reader`), and the sockets are
used with non-blocking calls only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from chatconfig import BrokerLink
from chatconfig.curve import apply_client, client_keys
from protocol.multipart import EVENTS, NOBLOCK, NOBLOCK_MORE, POLLIN, get, recv_parts, send

Batch = list[list[bytes]]

BATCH_SIZE = 512
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


def _configure(sock: zmq.asyncio.Socket, hwm: int) -> None:
    # Subscriptions travel SUB -> broker as messages: with thousands of rooms
    # the default HWM of 1,000 would silently drop some on reconnect.
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)


class Bus:
    def __init__(self, link: BrokerLink) -> None:
        self._ctx = zmq.asyncio.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._sub = self._ctx.socket(zmq.SUB)
        _configure(self._pub, link.endpoints.hwm)
        _configure(self._sub, link.endpoints.hwm)
        # CURVE (docs/security.md): encrypted, and the broker admits only allowed keys.
        curve = client_keys(link.curve.curve_secret_key, link.curve.curve_broker_key)
        if curve is not None:
            for sock in (self._pub, self._sub):
                apply_client(sock, *curve)
        self._pub.connect(link.endpoints.broker_pub)
        self._sub.connect(link.endpoints.broker_sub)
        # Synchronous views of the same sockets: non-blocking sends and batch
        # reads without a future per message.
        self._pub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self._pub.underlying)
        self._monitors: list[zmq.asyncio.Socket] = []
        self._sub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self._sub.underlying)
        self._on_batch: Callable[[Batch], None] | None = None
        self._drain_scheduled = False

    def publish(self, topic: bytes, body: bytes) -> None:
        # PUB never blocks: at its HWM it drops.
        pub = self._pub_now
        send(pub, topic, NOBLOCK_MORE)
        send(pub, body, NOBLOCK)

    def publish_many(self, topic: bytes, bodies: list[bytes]) -> None:
        """One ZeroMQ message for several chats of one room: `[topic, body, body, ...]`.

        Each ZeroMQ message costs a wake-up of libzmq's I/O thread and a
        read at every subscriber; a burst into one room pays that once.
        """
        pub = self._pub_now
        send(pub, topic, NOBLOCK_MORE)
        last = len(bodies) - 1
        for i, body in enumerate(bodies):
            send(pub, body, NOBLOCK if i == last else NOBLOCK_MORE)

    def subscribe(self, topic: bytes) -> None:
        self._sub_now.setsockopt(zmq.SUBSCRIBE, topic)
        self._recheck()

    def unsubscribe(self, topic: bytes) -> None:
        self._sub_now.setsockopt(zmq.UNSUBSCRIBE, topic)
        self._recheck()

    def _recheck(self) -> None:
        # Any operation on a ZeroMQ socket may consume the edge of its
        # notification FD; look again rather than miss a wake-up.
        if self._on_batch is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    async def run(self, on_batch: Callable[[Batch], None]) -> None:
        """Deliver batches to `on_batch` until cancelled.

        The SUB socket's notification FD stays registered with the event loop
        for good: no future, task or epoll change per wake-up. Each callback
        reads at most BATCH_SIZE messages and, if more are waiting, schedules
        itself after whatever else the loop has ready.
        """
        loop = asyncio.get_running_loop()
        self._on_batch = on_batch
        fd = int(self._sub_now.getsockopt(zmq.FD))
        loop.add_reader(fd, self._drain)
        self._recheck()
        try:
            await asyncio.Future()  # runs until cancelled
        finally:
            loop.remove_reader(fd)
            self._on_batch = None

    def _drain(self) -> None:
        self._drain_scheduled = False
        on_batch = self._on_batch
        if on_batch is None:
            return
        sub = self._sub_now
        batch: Batch = []
        pending: bool | None = None  # None: ask after the batch
        try:
            batch.append(recv_parts(sub))
            # At a low rate a wake-up brings one message: asking whether
            # another waits (~3 us) is cheaper than the zmq.Again that ends a
            # read (~8 us), and the answer is the check the edge-triggered FD
            # needs anyway. A burst is read on until zmq.Again.
            pending = bool(int(get(sub, EVENTS)) & POLLIN)
            if pending:
                for _ in range(BATCH_SIZE - 1):
                    batch.append(recv_parts(sub))
                pending = None  # ask again below
        except zmq.Again:
            pending = None
        try:
            if batch:
                on_batch(batch)
        finally:
            self._schedule_if_pending(pending)

    def _schedule_if_pending(self, pending: bool | None = None) -> None:
        # The FD is edge-triggered: while messages remain, come back (after
        # the WebSockets have had their turn) instead of waiting for an edge.
        if pending is None:
            pending = bool(int(get(self._sub_now, EVENTS)) & POLLIN)
        if pending and not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    async def watch(self, on_disconnect: Callable[[], None]) -> None:
        """Report a dropped broker connection the moment libzmq sees it.

        Probes would notice too, but only after `probe_timeout`; a crashed
        broker resets the TCP connection, and this turns that into an
        immediate "path down".
        """
        monitors = [
            sock.get_monitor_socket(zmq.EVENT_DISCONNECTED) for sock in (self._pub, self._sub)
        ]
        self._monitors = monitors
        poller = zmq.asyncio.Poller()
        for monitor in monitors:
            poller.register(monitor, zmq.POLLIN)
        while True:
            for monitor, _ in await poller.poll():
                event = parse_monitor_message(await monitor.recv_multipart())
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    on_disconnect()

    def close(self) -> None:
        for monitor in self._monitors:
            monitor.close(linger=0)
        self._pub.close(linger=0)
        self._sub.close(linger=0)
        self._ctx.term()

