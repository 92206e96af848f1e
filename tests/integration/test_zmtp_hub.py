"""broker.zmtphub against real libzmq PUB and SUB sockets, and against peers that misbehave.

To libzmq's PUB and SUB (what `chat-publish`, tools and CURVE-less edges of
older releases use) the hub must be the broker's XSUB and XPUB: publishers
subscribed to everything, subscribers filtered by prefix, a topic's first
subscriber and its last one leaving reported, heartbeats kept, the
high-water mark held, and a broken or silent peer dropped without harm to
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from broker import zmtphub
from broker.zmtphub import XPUB, XSUB, ZmtpHub, speaks_for
from protocol import zmtp

WAIT = 10.0


class Running:
    """A hub on two free loopback ports, and what it took and reported."""

    def __init__(self, hwm: int = 1000) -> None:
        self.taken: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self.reports: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
        self.hub = ZmtpHub(hwm, self._take, lambda t, on: self.reports.put_nowait((t, on)))
        self.pub = self.sub = ""

    def _take(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            self.taken.put_nowait(message)

    async def start(self) -> None:
        for side in (XSUB, XPUB):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            endpoint = f"tcp://127.0.0.1:{port}"
            await self.hub.listen(endpoint, side)
            if side == XSUB:
                self.pub = endpoint
            else:
                self.sub = endpoint

    async def next_taken(self) -> list[bytes]:
        return await asyncio.wait_for(self.taken.get(), WAIT)

    async def next_report(self) -> tuple[bytes, bool]:
        return await asyncio.wait_for(self.reports.get(), WAIT)


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(0)


@pytest.fixture
async def hub() -> AsyncIterator[Running]:
    running = Running()
    await running.start()
    yield running
    running.hub.close()


async def publish_until_taken(pub: zmq.asyncio.Socket, hub: Running,
                              message: list[bytes]) -> None:
    """A PUB sends nothing before the hub's subscribe-all reaches it: send until it is taken."""
    for _ in range(int(WAIT / 0.05)):
        await pub.send_multipart(message)
        with contextlib.suppress(TimeoutError):
            assert await asyncio.wait_for(hub.taken.get(), 0.05) == message
            return
    raise AssertionError("the hub never took what the PUB sent")


async def test_a_libzmq_pub_is_subscribed_to_everything(
        hub: Running, ctx: zmq.asyncio.Context) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.connect(hub.pub)
    await publish_until_taken(pub, hub, [b"room:a", b"first"])
    big = b"x" * 70_000  # a long frame
    await pub.send_multipart([b"anything", b"two", big])
    assert await hub.next_taken() == [b"anything", b"two", big]


async def test_subscribers_get_what_their_prefixes_match_once(
        hub: Running, ctx: zmq.asyncio.Context) -> None:
    exact, prefix = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    exact.setsockopt(zmq.SUBSCRIBE, b"room:1")
    prefix.setsockopt(zmq.SUBSCRIBE, b"room:")
    prefix.setsockopt(zmq.SUBSCRIBE, b"room:1")  # matches twice: delivered once
    exact.connect(hub.sub)
    prefix.connect(hub.sub)
    assert {await hub.next_report() for _ in range(2)} == {(b"room:1", True), (b"room:", True)}
    hub.hub.send([[b"room:2", b"two"], [b"room:1", b"one"], [b"other", b"none"]])
    assert await asyncio.wait_for(exact.recv_multipart(), WAIT) == [b"room:1", b"one"]
    assert await asyncio.wait_for(prefix.recv_multipart(), WAIT) == [b"room:2", b"two"]
    assert await asyncio.wait_for(prefix.recv_multipart(), WAIT) == [b"room:1", b"one"]
    hub.hub.send([[b"room:1", b"again"]])
    assert await asyncio.wait_for(prefix.recv_multipart(), WAIT) == [b"room:1", b"again"]
    assert await asyncio.wait_for(exact.recv_multipart(), WAIT) == [b"room:1", b"again"]


async def test_the_last_subscriber_leaving_is_reported_by_cancel_or_by_going(
        hub: Running, ctx: zmq.asyncio.Context) -> None:
    a, b = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    for sub in (a, b):
        sub.setsockopt(zmq.SUBSCRIBE, b"room:x")
        sub.connect(hub.sub)
    assert await hub.next_report() == (b"room:x", True)  # the first subscriber only
    a.setsockopt(zmq.UNSUBSCRIBE, b"room:x")
    b.setsockopt(zmq.SUBSCRIBE, b"room:y")
    # b's subscription was sent after a's cancel: once it is reported, the
    # cancel has been handled, and it said nothing (b still subscribes).
    assert await hub.next_report() == (b"room:y", True)
    b.close(0)  # gone without a cancel
    assert {await hub.next_report() for _ in range(2)} == {(b"room:x", False),
                                                            (b"room:y", False)}


async def test_heartbeats_keep_libzmq_peers_and_drop_a_silent_one(
        hub: Running, ctx: zmq.asyncio.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"t")
    sub.connect(hub.sub)
    assert await hub.next_report() == (b"t", True)
    # A peer that finishes its handshake and then says nothing, not even PONG.
    reader, writer = await asyncio.open_connection(*hub.sub[6:].rsplit(":", 1))
    writer.write(zmtp.greeting() + zmtp.ready(b"SUB"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    pings = 0
    with contextlib.suppress(ConnectionError):
        while data := await asyncio.wait_for(reader.read(4096), WAIT):
            pings += data.count(b"\x04PING")
    silent_for = loop.time() - started
    assert zmtphub.HEARTBEAT_TIMEOUT <= silent_for <= zmtphub.HEARTBEAT_TIMEOUT + 2.5
    assert pings >= 2
    # libzmq's SUB answered every PING meanwhile: still connected, still served.
    hub.hub.send([[b"t", b"still here"]])
    assert await asyncio.wait_for(sub.recv_multipart(), WAIT) == [b"t", b"still here"]
    writer.close()


async def test_past_the_hwm_a_stuck_subscriber_is_skipped_and_counted() -> None:
    running = Running(hwm=5)
    await running.start()
    try:
        # A subscriber that never reads: the kernel's buffers fill, then the
        # hub's write buffer passes 5 KiB.
        stuck = socket.create_connection(("127.0.0.1", int(running.sub.rsplit(":", 1)[1])))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(zmtp.greeting() + zmtp.ready(b"SUB") + zmtp.subscription(b"t", True))
        assert await running.next_report() == (b"t", True)
        body = b"x" * 10_000
        for _ in range(2_000):  # 20 MB: more than loopback's buffers hold
            running.hub.send([[b"t", body]])
            await asyncio.sleep(0)
            if running.hub.dropped:
                break
        assert running.hub.dropped > 0
        stuck.close()
    finally:
        running.hub.close()


@pytest.mark.parametrize(("side", "stream", "why"), [
    (XSUB, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a ZMTP peer"),
    (XPUB, zmtp.greeting() + zmtp.ready(b"PUB"), "is a PUB socket"),  # endpoints swapped
    # What a refused peer sent with its handshake is not taken either.
    (XSUB, zmtp.greeting() + zmtp.ready(b"SUB") + zmtp.message([b"t", b"bogus"]),
     "is a SUB socket"),
])
async def test_a_broken_or_wrong_peer_is_closed_and_the_others_go_on(
        hub: Running, ctx: zmq.asyncio.Context, caplog: pytest.LogCaptureFixture,
        side: bytes, stream: bytes, why: str) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.connect(hub.pub)
    await publish_until_taken(pub, hub, [b"t", b"before"])
    endpoint = hub.pub if side == XSUB else hub.sub
    reader, writer = await asyncio.open_connection(*endpoint[6:].rsplit(":", 1))
    writer.write(stream)
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(4096), WAIT):
            pass  # our greeting, then the close
    writer.close()
    assert why in caplog.text
    await pub.send_multipart([b"t", b"after"])
    assert await hub.next_taken() == [b"t", b"after"]  # and nothing from the broken peer


def test_curve_and_what_only_libzmq_binds_stay_with_libzmq() -> None:
    assert speaks_for("", "tcp://127.0.0.1:5555", "ipc:///run/roomcast/sub")
    assert speaks_for("", "tcp://*:5555", "tcp://[::1]:5556")
    assert not speaks_for("/etc/roomcast/broker.key_secret", "tcp://*:5555", "tcp://*:5556")
    assert not speaks_for("", "tcp://*:5555", "ipc://@roomcast-sub")
    assert not speaks_for("", "tcp://eth0:5555", "tcp://*:5556")
