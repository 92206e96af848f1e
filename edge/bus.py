"""The edge's links to the broker shards, on the aiohttp event loop.

`Bus` is what the edge uses; `edge.app.open_bus` picks who speaks for it.
This module also holds the libzmq implementation, `LibzmqBus`.

One PUB and one SUB per shard (`--broker-shards`): a room's chats, probes
and queries go to the room's shard only (`protocol.shards.shard_of`), and
its subscription is made there; every other topic an edge subscribes to
(its own, for acks, replies and health probes) is subscribed at every shard,
since any shard may answer. Topics that are not a room's are published at a
shard named by the caller.

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
from abc import ABC, abstractmethod
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from chatconfig import BrokerLink
from chatconfig.curve import KeyPair, apply_client, client_keys
from protocol.multipart import EVENTS, NOBLOCK, NOBLOCK_MORE, POLLIN, get, recv_parts, send
from protocol.shards import shard_of
from protocol.topics import room_of_topic

Batch = list[list[bytes]]
# What one wake-up read: each shard's batch, by shard index.
Batches = list[tuple[int, Batch]]

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


def _read(sub: zmq.Socket[bytes]) -> tuple[Batch, bool | None]:
    """Up to BATCH_SIZE messages; False if no more wait, None if not known."""
    batch: Batch = []
    pending: bool | None = None
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
            pending = None  # ask again after the batch
    except zmq.Again:
        pending = None
    return batch, pending


class _Link:
    """One shard's two sockets, and what their reading needs."""

    def __init__(self, ctx: zmq.asyncio.Context, pub_end: str, sub_end: str, hwm: int,
                 curve: tuple[KeyPair, bytes] | None) -> None:
        self.pub = ctx.socket(zmq.PUB)
        self.sub = ctx.socket(zmq.SUB)
        _configure(self.pub, hwm)
        _configure(self.sub, hwm)
        # CURVE (docs/security.md): encrypted, and the broker admits only allowed keys.
        if curve is not None:
            for sock in (self.pub, self.sub):
                apply_client(sock, *curve)
        self.pub.connect(pub_end)
        self.sub.connect(sub_end)
        # Synchronous views of the same sockets: non-blocking sends and batch
        # reads without a future per message.
        self.pub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.pub.underlying)
        self.sub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.sub.underlying)
        self.drain_scheduled = False


class Bus(ABC):
    """What the edge asks of its broker links, whichever speaks for them.

    `edge.app.open_bus` picks the implementation: `edge.zmtpbus.ZmtpBus` speaks ZMTP
    itself on the event loop (plain tcp:// and ipc:// links), `LibzmqBus`
    goes through libzmq (CURVE, and any other transport).
    """

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._shard_cache: dict[bytes, int] = {}

    def shard_of_topic(self, topic: bytes) -> int | None:
        """The shard of a room's topic; None for any other topic."""
        if self.shards == 1:
            return 0 if room_of_topic(topic) is not None else None
        shard = self._shard_cache.get(topic)
        if shard is None:
            room_id = room_of_topic(topic)
            if room_id is None:
                return None
            shard = shard_of(room_id, self.shards)
            if len(self._shard_cache) > 100_000:
                self._shard_cache.clear()
            self._shard_cache[topic] = shard
        return shard

    def _publish_shard(self, topic: bytes, shard: int | None) -> int:
        if self.shards == 1:
            return 0  # one broker: nothing to choose
        if shard is None:
            shard = self.shard_of_topic(topic)
            if shard is None:
                raise ValueError(f"not a room's topic, and no shard named: {topic!r}")
        return shard

    def _subscribed_at(self, topic: bytes) -> list[int]:
        if self.shards == 1:
            return [0]
        shard = self.shard_of_topic(topic)
        return list(range(self.shards)) if shard is None else [shard]

    @property
    def dropped(self) -> int:
        """Messages dropped on their way to a broker (past the high-water mark).

        0 where libzmq drops: its PUB socket does not say.
        """
        return 0

    @abstractmethod
    def publish(self, topic: bytes, body: bytes, shard: int | None = None) -> None:
        """To the room's shard, or to `shard` (required for a topic that is not a room's)."""
        ...

    @abstractmethod
    def publish_many(self, topic: bytes, bodies: list[bytes], shard: int | None = None) -> None:
        """One ZeroMQ message for several chats of one room: `[topic, body, body, ...]`.

        Each message costs a wake-up of the broker and a read at every
        subscriber; a burst into one room pays that once.
        """
        ...

    @abstractmethod
    def subscribe(self, topic: bytes) -> None:
        ...

    @abstractmethod
    def unsubscribe(self, topic: bytes) -> None:
        ...

    @abstractmethod
    async def run(self, on_batch: Callable[[Batches], None]) -> None:
        """Deliver what arrives to `on_batch([(shard, batch), ...])` until cancelled."""
        ...

    @abstractmethod
    async def watch(self, on_disconnect: Callable[[int], None]) -> None:
        """Report a dropped shard connection the moment it is seen, until cancelled.

        Probes would notice too, but only after `probe_timeout`; a crashed
        broker resets the TCP connection, and this turns that into an
        immediate "path down" for that shard.
        """
        ...

    @abstractmethod
    def close(self) -> None:
        ...


class LibzmqBus(Bus):
    """Through libzmq: one PUB and one SUB socket per shard."""

    def __init__(self, link: BrokerLink) -> None:
        self._ctx = zmq.asyncio.Context()
        curve = client_keys(link.curve.curve_secret_key, link.curve.curve_broker_key)
        self._links = [
            _Link(self._ctx, shard.pub, shard.sub, link.endpoints.hwm, curve)
            for shard in link.shards()
        ]
        super().__init__(len(self._links))
        self._monitors: list[zmq.asyncio.Socket] = []
        self._on_batch: Callable[[Batches], None] | None = None
        self._all_scheduled = False  # several shards: one drain of them all is due

    def _pub_for(self, topic: bytes, shard: int | None) -> zmq.Socket[bytes]:
        return self._links[self._publish_shard(topic, shard)].pub_now

    def publish(self, topic: bytes, body: bytes, shard: int | None = None) -> None:
        # PUB never blocks: at its HWM it drops.
        pub = self._pub_for(topic, shard)
        send(pub, topic, NOBLOCK_MORE)
        send(pub, body, NOBLOCK)

    def publish_many(self, topic: bytes, bodies: list[bytes], shard: int | None = None) -> None:
        pub = self._pub_for(topic, shard)
        send(pub, topic, NOBLOCK_MORE)
        last = len(bodies) - 1
        for i, body in enumerate(bodies):
            send(pub, body, NOBLOCK if i == last else NOBLOCK_MORE)

    def subscribe(self, topic: bytes) -> None:
        for i in self._subscribed_at(topic):
            self._links[i].sub_now.setsockopt(zmq.SUBSCRIBE, topic)
            self._recheck(i)

    def unsubscribe(self, topic: bytes) -> None:
        for i in self._subscribed_at(topic):
            self._links[i].sub_now.setsockopt(zmq.UNSUBSCRIBE, topic)
            self._recheck(i)

    def _recheck(self, i: int) -> None:
        # Any operation on a ZeroMQ socket may consume the edge of its
        # notification FD; look again rather than miss a wake-up.
        if self._on_batch is None:
            return
        if self.shards > 1:
            self._schedule_all()
            return
        link = self._links[i]
        if not link.drain_scheduled:
            link.drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain, i)

    async def run(self, on_batch: Callable[[Batches], None]) -> None:
        """Each SUB socket's notification FD stays registered with the event
        loop for good: no future, task or epoll change per wake-up. Each
        callback reads at most BATCH_SIZE messages per shard and, if more are
        waiting, schedules itself after whatever else the loop has ready.
        With several shards their FDs wake one drain of every shard, after
        the loop's other ready work: the shards' streams arrive apart, and
        read separately each shard's few chats paid a drain, a fan-out pass
        and a write per member of their own.
        """
        loop = asyncio.get_running_loop()
        self._on_batch = on_batch
        fds = []
        for i, link in enumerate(self._links):
            fd = int(link.sub_now.getsockopt(zmq.FD))
            if self.shards == 1:
                loop.add_reader(fd, self._drain, i)
            else:
                loop.add_reader(fd, self._schedule_all)
            fds.append(fd)
            self._recheck(i)
        try:
            await asyncio.Future()  # runs until cancelled
        finally:
            for fd in fds:
                loop.remove_reader(fd)
            self._on_batch = None

    def _drain(self, i: int) -> None:
        """One broker: read a batch of its SUB socket."""
        link = self._links[i]
        link.drain_scheduled = False
        on_batch = self._on_batch
        if on_batch is None:
            return
        batch, pending = _read(link.sub_now)
        try:
            if batch:
                on_batch([(i, batch)])
        finally:
            self._schedule_if_pending(i, pending)

    def _schedule_all(self) -> None:
        if not self._all_scheduled:
            self._all_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_all)

    def _drain_all(self) -> None:
        """Several shards: a batch of every SUB socket with messages waiting."""
        self._all_scheduled = False
        on_batch = self._on_batch
        if on_batch is None:
            return
        batches: Batches = []
        unsure: list[zmq.Socket[bytes]] = []  # read on to the end: ask again after
        for i, link in enumerate(self._links):
            sub = link.sub_now
            if int(get(sub, EVENTS)) & POLLIN:
                batch, pending = _read(sub)
                if batch:
                    batches.append((i, batch))
                if pending is None:
                    unsure.append(sub)
        try:
            if batches:
                on_batch(batches)
        finally:
            # Edge-triggered FDs: whatever still waits gets another drain.
            if any(int(get(sub, EVENTS)) & POLLIN for sub in unsure):
                self._schedule_all()

    def _schedule_if_pending(self, i: int, pending: bool | None = None) -> None:
        # The FD is edge-triggered: while messages remain, come back (after
        # the WebSockets have had their turn) instead of waiting for an edge.
        link = self._links[i]
        if pending is None:
            pending = bool(int(get(link.sub_now, EVENTS)) & POLLIN)
        if pending and not link.drain_scheduled:
            link.drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain, i)

    async def watch(self, on_disconnect: Callable[[int], None]) -> None:
        poller = zmq.asyncio.Poller()
        shard_of_monitor: dict[zmq.asyncio.Socket, int] = {}
        for i, link in enumerate(self._links):
            for sock in (link.pub, link.sub):
                monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                self._monitors.append(monitor)
                shard_of_monitor[monitor] = i
                poller.register(monitor, zmq.POLLIN)
        while True:
            for monitor, _ in await poller.poll():
                event = parse_monitor_message(await monitor.recv_multipart())
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    on_disconnect(shard_of_monitor[monitor])

    def close(self) -> None:
        for monitor in self._monitors:
            monitor.close(linger=0)
        for link in self._links:
            link.pub.close(linger=0)
            link.sub.close(linger=0)
        self._ctx.term()
