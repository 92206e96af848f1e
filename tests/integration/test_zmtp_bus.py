"""edge.zmtpbus against real libzmq XSUB and XPUB sockets, set up as the broker sets them.

The edge's ZMTP links must be indistinguishable from libzmq's PUB and SUB:
subscriptions counted and resent after a reconnect, what was published
while the broker was away delivered when it is back, heartbeats answered,
a silent or wrong peer dropped, and the high-water mark held.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import zmq
import zmq.asyncio

from broker.server import SUBSCRIBE_ALL, configure
from chatconfig import BrokerEndpoints, BrokerLink, CurveClient
from edge import zmtpbus
from edge.app import open_bus
from edge.bus import Batches, LibzmqBus
from edge.zmtpbus import ZmtpBus, speaks_for

TOPIC = b"room:zmtp"
WAIT = 10.0


class Hub:
    """A broker's two sockets, bound where the bus will connect."""

    def __init__(self, ctx: zmq.asyncio.Context, pub_port: int = 0, sub_port: int = 0,
                 heartbeat_ms: tuple[int, int] | None = None) -> None:
        self.xsub = ctx.socket(zmq.XSUB)
        self.xpub = ctx.socket(zmq.XPUB)
        for sock in (self.xsub, self.xpub):
            configure(sock, 1000)
            if heartbeat_ms is not None:
                sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms[0])
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_ms[1])
        self.pub_port = self._bind(self.xsub, pub_port)
        self.sub_port = self._bind(self.xpub, sub_port)
        self.xsub.send(SUBSCRIBE_ALL)

    @staticmethod
    def _bind(sock: zmq.asyncio.Socket, port: int) -> int:
        if not port:
            return sock.bind_to_random_port("tcp://127.0.0.1")
        # The port of a socket just closed: libzmq's I/O thread lets it go soon after.
        deadline = time.monotonic() + WAIT
        while True:
            try:
                sock.bind(f"tcp://127.0.0.1:{port}")
                return port
            except zmq.ZMQError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def link(self, hwm: int = 1000) -> BrokerLink:
        return BrokerLink(endpoints=BrokerEndpoints(
            broker_pub=f"tcp://127.0.0.1:{self.pub_port}",
            broker_sub=f"tcp://127.0.0.1:{self.sub_port}", hwm=hwm))

    async def subscription(self) -> bytes:
        return bytes(await asyncio.wait_for(self.xpub.recv(), WAIT))

    async def published(self) -> list[bytes]:
        return list(await asyncio.wait_for(self.xsub.recv_multipart(), WAIT))

    def close(self) -> None:
        self.xsub.close(0)
        self.xpub.close(0)


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(0)


class Running:
    """A bus with its run and watch tasks, and what it delivered and reported."""

    def __init__(self, bus: ZmtpBus) -> None:
        self.bus = bus
        self.delivered: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self.disconnects: asyncio.Queue[int] = asyncio.Queue()

        def on_batch(batches: Batches) -> None:
            for _, batch in batches:
                for parts in batch:
                    self.delivered.put_nowait(parts)

        self.tasks = [asyncio.create_task(bus.run(on_batch)),
                      asyncio.create_task(bus.watch(self.disconnects.put_nowait))]

    async def next(self) -> list[bytes]:
        return await asyncio.wait_for(self.delivered.get(), WAIT)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.bus.close()


@contextlib.asynccontextmanager
async def running(link: BrokerLink, before: Callable[[ZmtpBus], None] | None = None,
                  ) -> AsyncIterator[Running]:
    bus = open_bus(link)
    assert isinstance(bus, ZmtpBus)
    if before is not None:
        before(bus)
    run = Running(bus)
    try:
        yield run
    finally:
        await run.stop()


async def _published_until_delivered(bus: ZmtpBus, hub: Hub, run: Running) -> None:
    """XPUB drops until our subscription is in: publish probes until one comes back."""
    async def echo() -> None:
        while True:
            parts = await hub.xsub.recv_multipart()
            await hub.xpub.send_multipart(parts)
    echoing = asyncio.create_task(echo())
    try:
        for _ in range(200):
            bus.publish(TOPIC, b"probe")
            try:
                assert await asyncio.wait_for(run.delivered.get(), 0.05) == [TOPIC, b"probe"]
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("nothing came back through the hub")
    finally:
        echoing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await echoing
    while not run.delivered.empty():
        assert run.delivered.get_nowait() == [TOPIC, b"probe"]


async def test_publish_subscribe_and_deliver_through_libzmq(ctx: zmq.asyncio.Context) -> None:
    hub = Hub(ctx)
    async with running(hub.link(), lambda bus: bus.subscribe(TOPIC)) as run:
        assert await hub.subscription() == b"\x01" + TOPIC  # sent once connected
        run.bus.publish(TOPIC, b"one")
        assert await hub.published() == [TOPIC, b"one"]
        run.bus.publish_many(TOPIC, [b"two", b"x" * 300, b"three"])
        assert await hub.published() == [TOPIC, b"two", b"x" * 300, b"three"]
        await hub.xpub.send_multipart([TOPIC, b"a", b"y" * 70_000])
        await hub.xpub.send_multipart([b"room:other", b"filtered by XPUB"])
        await hub.xpub.send_multipart([TOPIC, b"b"])
        assert await run.next() == [TOPIC, b"a", b"y" * 70_000]
        assert await run.next() == [TOPIC, b"b"]
    hub.close()


async def test_subscriptions_are_counted_like_libzmq_sub(ctx: zmq.asyncio.Context) -> None:
    hub = Hub(ctx)
    async with running(hub.link()) as run:
        await _published_until_delivered_prepare(run, hub)
        run.bus.subscribe(b"room:x")
        run.bus.subscribe(b"room:x")
        assert await hub.subscription() == b"\x01room:x"
        run.bus.unsubscribe(b"room:x")  # one left: no cancel yet
        run.bus.subscribe(b"room:y")
        assert await hub.subscription() == b"\x01room:y"
        run.bus.unsubscribe(b"room:x")
        assert await hub.subscription() == b"\x00room:x"
        run.bus.unsubscribe(b"room:x")  # more cancels than subscribes: nothing sent
        run.bus.unsubscribe(b"room:y")
        assert await hub.subscription() == b"\x00room:y"
    hub.close()


async def _published_until_delivered_prepare(run: Running, hub: Hub) -> None:
    run.bus.subscribe(TOPIC)
    assert await hub.subscription() == b"\x01" + TOPIC
    await _published_until_delivered(run.bus, hub, run)


async def test_broker_restart_reported_resubscribed_and_held_messages_sent(
        ctx: zmq.asyncio.Context) -> None:
    hub = Hub(ctx)
    async with running(hub.link()) as run:
        await _published_until_delivered_prepare(run, hub)
        pub_port, sub_port = hub.pub_port, hub.sub_port
        hub.close()
        # Both links (PUB and SUB) report the loss, as libzmq's monitors did.
        assert {await asyncio.wait_for(run.disconnects.get(), WAIT) for _ in range(2)} == {0}
        run.bus.publish(TOPIC, b"while away")
        hub = Hub(ctx, pub_port, sub_port)
        assert await hub.subscription() == b"\x01" + TOPIC  # the new XPUB is told again
        assert await hub.published() == [TOPIC, b"while away"]
        await _published_until_delivered(run.bus, hub, run)
    hub.close()


async def test_the_brokers_heartbeats_are_answered(ctx: zmq.asyncio.Context,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The bus itself stays quiet (no PING of its own for a minute): the
    # connection lives only if the broker's PINGs get their PONGs.
    monkeypatch.setattr(zmtpbus, "HEARTBEAT_IVL", 60.0)
    hub = Hub(ctx, heartbeat_ms=(100, 300))
    async with running(hub.link()) as run:
        await _published_until_delivered_prepare(run, hub)
        await asyncio.sleep(1.5)  # five of the hub's heartbeat timeouts, unanswered = dropped
        assert run.disconnects.empty()
        run.bus.publish(TOPIC, b"still here")
        assert await hub.published() == [TOPIC, b"still here"]
    hub.close()


async def test_a_silent_peer_is_dropped_and_dialled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zmtpbus, "HEARTBEAT_IVL", 0.1)
    monkeypatch.setattr(zmtpbus, "HEARTBEAT_TIMEOUT", 0.5)
    accepted: asyncio.Queue[None] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accept, and never answer the greeting
        accepted.put_nowait(None)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    other = await asyncio.start_server(mute, "127.0.0.1", 0)
    link = BrokerLink(endpoints=BrokerEndpoints(
        broker_pub=f"tcp://127.0.0.1:{port}",
        broker_sub=f"tcp://127.0.0.1:{other.sockets[0].getsockname()[1]}"))
    async with running(link):
        for _ in range(4):  # two links, each dialled at least twice
            await asyncio.wait_for(accepted.get(), WAIT)
    for writer in writers:
        writer.close()
    server.close()
    other.close()


async def test_swapped_endpoints_are_refused_and_said(ctx: zmq.asyncio.Context,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub(ctx)
    swapped = BrokerLink(endpoints=BrokerEndpoints(
        broker_pub=f"tcp://127.0.0.1:{hub.sub_port}",
        broker_sub=f"tcp://127.0.0.1:{hub.pub_port}"))
    with caplog.at_level(logging.WARNING, logger="edge.bus"):
        async with running(swapped):
            for _ in range(int(WAIT / 0.05)):
                if len({r.getMessage() for r in caplog.records}) >= 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a few more retries: still said once each
    said = sorted({r.getMessage() for r in caplog.records})
    # libzmq hangs up on a peer of the wrong type: said once per link, not per retry.
    assert said == sorted([
        f"broker link tcp://127.0.0.1:{hub.sub_port}: closed during the ZMTP handshake; "
        "is it the broker's XSUB or SUB socket, and does the broker want CURVE "
        "(--curve-secret-key)?",
        f"broker link tcp://127.0.0.1:{hub.pub_port}: closed during the ZMTP handshake; "
        "is it the broker's XPUB or PUB socket, and does the broker want CURVE "
        "(--curve-secret-key)?",
    ])
    assert len(caplog.records) == 2
    hub.close()


async def test_held_messages_stop_at_the_high_water_mark(ctx: zmq.asyncio.Context) -> None:
    hub = Hub(ctx)
    link = hub.link(hwm=5)
    pub_port, sub_port = hub.pub_port, hub.sub_port
    hub.close()  # no broker yet: the bus holds what it publishes
    bus = open_bus(link)
    assert isinstance(bus, ZmtpBus)
    for i in range(8):
        bus.publish(TOPIC, b"%d" % i)
    assert bus.dropped == 3
    hub = Hub(ctx, pub_port, sub_port)
    run = Running(bus)
    try:
        assert [await hub.published() for _ in range(5)] == [[TOPIC, b"%d" % i] for i in range(5)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(hub.xsub.recv_multipart(), 0.3)
    finally:
        await run.stop()
        hub.close()


def test_curve_and_other_transports_stay_with_libzmq() -> None:
    ends = BrokerEndpoints(broker_pub="tcp://127.0.0.1:1", broker_sub="ipc:///tmp/x/sub")
    assert speaks_for(BrokerLink(endpoints=ends))
    assert speaks_for(BrokerLink(broker_shards=("tcp://[::1]:1|ipc:///run/roomcast/sub",)))
    # uvloop cannot dial Linux's abstract names (a path starting with NUL): libzmq does.
    assert not speaks_for(BrokerLink(broker_shards=("tcp://[::1]:1|ipc://@abstract",)))
    curve = CurveClient(curve_secret_key="edge.key_secret", curve_broker_key="broker.key")
    assert not speaks_for(BrokerLink(endpoints=ends, curve=curve))
    for pub in ("inproc://hub", "tcp://10.0.0.1;10.0.0.2:5559"):
        link = BrokerLink(endpoints=BrokerEndpoints(broker_pub=pub, broker_sub="tcp://h:2"))
        assert not speaks_for(link), pub
        bus = open_bus(link)
        assert isinstance(bus, LibzmqBus)
        bus.close()


async def test_a_curve_broker_is_told_apart_from_a_plain_one(
        ctx: zmq.asyncio.Context, caplog: pytest.LogCaptureFixture) -> None:
    # An edge left without its CURVE key, against a broker that has one.
    _public, secret = zmq.curve_keypair()
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.CURVE_SERVER, 1)
    xpub.setsockopt(zmq.CURVE_SECRETKEY, secret)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    hub = Hub(ctx)
    link = BrokerLink(endpoints=BrokerEndpoints(broker_pub=f"tcp://127.0.0.1:{hub.pub_port}",
                                                broker_sub=f"tcp://127.0.0.1:{port}"))
    # libzmq hangs up before its greeting says CURVE: the warning names both causes.
    wanted = (f"broker link tcp://127.0.0.1:{port}: closed during the ZMTP handshake; is it "
              "the broker's XPUB or PUB socket, and does the broker want CURVE")
    with caplog.at_level(logging.WARNING, logger="edge.bus"):
        async with running(link) as run:
            for _ in range(int(WAIT / 0.05)):
                if any(r.getMessage().startswith(wanted) for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            run.bus.subscribe(TOPIC)
            await xpub.send_multipart([TOPIC, b"never"])
            assert run.delivered.empty()
    assert any(r.getMessage().startswith(wanted) for r in caplog.records), caplog.text
    xpub.close(0)
    hub.close()


async def test_a_link_that_cannot_even_resolve_leaves_the_others_working(
        ctx: zmq.asyncio.Context, caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub(ctx)
    link = BrokerLink(endpoints=BrokerEndpoints(
        broker_pub=f"tcp://{'a' * 64}.invalid:{hub.pub_port}",  # a DNS label over 63 bytes
        broker_sub=f"tcp://127.0.0.1:{hub.sub_port}"))
    with caplog.at_level(logging.WARNING, logger="edge.bus"):
        async with running(link, lambda bus: bus.subscribe(TOPIC)) as run:
            assert await hub.subscription() == b"\x01" + TOPIC
            await hub.xpub.send_multipart([TOPIC, b"still delivered"])
            assert await run.next() == [TOPIC, b"still delivered"]
            assert not run.tasks[0].done()
    assert "connecting failed" in caplog.text
    hub.close()
