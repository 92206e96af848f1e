"""CURVE on the broker path: allowed keys chat; unknown keys and no keys get nothing through.

The rogue sockets are raw ZeroMQ sockets, as any process on the network
could open. Each waits until the broker has refused its handshake (socket
monitor events) before it tries to publish or listen, and a positive control
with an allowed key proves the same raw method does work when authorised.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from chatconfig.curve import KeyPair, apply_client, generate, load_keypair, load_public_key
from protocol.codec import encode_chat
from protocol.topics import room_topic
from tests.support.procs import Cluster, running_cluster, thread_names
from tests.support.wsclient import WsClient

Open = Callable[..., Any]
REFUSED = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_DISCONNECTED,
}
EVENT_TIMEOUT = 10.0


@dataclass
class Keys:
    dir: Path
    broker_public: bytes

    def pair(self, name: str) -> KeyPair:
        return load_keypair(self.dir / f"{name}.key_secret")

    def edge_args(self, name: str) -> list[str]:
        return [
            "--curve-secret-key", str(self.dir / f"{name}.key_secret"),
            "--curve-broker-key", str(self.dir / "broker.key"),
        ]


@dataclass
class CurveCluster:
    cluster: Cluster
    keys: Keys


@pytest.fixture(scope="module")
def curve_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CurveCluster]:
    """A CURVE broker allowing edge-a, edge-b and publisher; one edge per allowed edge key."""
    root = tmp_path_factory.mktemp("curve")
    allowed = root / "allowed"
    allowed.mkdir()
    for name in ("broker", "edge-a", "edge-b", "publisher", "rogue"):
        public, _ = generate(root, name)
        if name not in ("broker", "rogue"):
            (allowed / public.name).write_bytes(public.read_bytes())
    keys = Keys(root, load_public_key(root / "broker.key"))
    env = {
        "CHAT_CURVE_SECRET_KEY": str(root / "broker.key_secret"),
        "CHAT_CURVE_ALLOWED": str(allowed),
    }
    with running_cluster(edges=1, env=env, edge_args=keys.edge_args("edge-a")) as cluster:
        cluster.start_edge(args=keys.edge_args("edge-b")).wait_healthy()
        yield CurveCluster(cluster, keys)


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def room() -> str:
    return f"curve-{uuid.uuid4().hex[:10]}"


def raw_socket(
    ctx: zmq.asyncio.Context, kind: int, keys: Keys, who: str | None
) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    """A raw socket (and its monitor) with `who`'s key, or without CURVE when None."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 50)
    if who is not None:
        apply_client(sock, keys.pair(who), keys.broker_public)
    return sock, sock.get_monitor_socket()


async def wait_event(monitor: zmq.asyncio.Socket, wanted: Set[int], times: int = 1) -> None:
    seen = 0
    deadline = time.monotonic() + EVENT_TIMEOUT
    while seen < times:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted} event from the broker"
        if not await monitor.poll(left * 1000):
            continue
        event = parse_monitor_message(await monitor.recv_multipart())
        if event["event"] in wanted:
            seen += 1


async def members(c: CurveCluster, clients: Open, r: str) -> tuple[WsClient, WsClient]:
    a = await clients(c.cluster.edges[0].url)
    b = await clients(c.cluster.edges[1].url)
    await a.join(r)
    await b.join(r)
    return a, b


def chat_body(r: str, message: str) -> bytes:
    return encode_chat(r, message, f"raw-{uuid.uuid4().hex[:8]}", "raw", 1)


async def test_edges_with_allowed_keys_chat_across_the_broker(
    curve_cluster: CurveCluster, clients: Open
) -> None:
    r = room()
    a, b = await members(curve_cluster, clients, r)
    await a.chat("over CURVE", r)
    for c in (a, b):
        assert (await c.recv_chat())["message"] == "over CURVE"
    # CURVE's handshake is libzmq's: these edges and their broker keep libzmq's sockets.
    broker = curve_cluster.cluster.broker
    assert broker is not None
    for pid in (broker.pid, *(edge.proc.pid for edge in curve_cluster.cluster.edges)):
        assert any(n.startswith("ZMQbg/IO") for n in thread_names(pid))


async def test_allowed_raw_publisher_gets_through(
    curve_cluster: CurveCluster, clients: Open, zctx: zmq.asyncio.Context
) -> None:
    """The positive control for the rogue publisher test below."""
    r = room()
    _, member = await members(curve_cluster, clients, r)
    pub, monitor = raw_socket(zctx, zmq.PUB, curve_cluster.keys, "publisher")
    pub.connect(curve_cluster.cluster.broker_pub)
    await wait_event(monitor, {zmq.EVENT_HANDSHAKE_SUCCEEDED})
    # The broker's subscribe-all reaches a new publisher just after the handshake:
    # publish until one arrives.
    for _ in range(200):
        await pub.send_multipart([room_topic(r), chat_body(r, "allowed raw")])
        with contextlib.suppress(TimeoutError):
            got = await member.recv_chat(timeout=0.05)
            assert got["message"] == "allowed raw"
            return
    pytest.fail("an allowed publisher never got through")


@pytest.mark.parametrize("who", ["rogue", None], ids=["unknown_key", "no_key"])
async def test_rogue_publisher_cannot_publish(
    curve_cluster: CurveCluster, clients: Open, zctx: zmq.asyncio.Context, who: str | None
) -> None:
    r = room()
    sender, member = await members(curve_cluster, clients, r)
    pub, monitor = raw_socket(zctx, zmq.PUB, curve_cluster.keys, who)
    pub.connect(curve_cluster.cluster.broker_pub)
    # Queued while the handshake is under way (delivered if it succeeded), then after
    # the broker has refused it.
    for _ in range(20):
        await pub.send_multipart([room_topic(r), chat_body(r, "injected early")])
    await wait_event(monitor, REFUSED)
    for _ in range(20):
        await pub.send_multipart([room_topic(r), chat_body(r, "injected late")])
    await sender.chat("legit marker", r)
    # The marker went through the broker after every injection attempt.
    assert (await member.recv_chat())["message"] == "legit marker"


@pytest.mark.parametrize("who", ["rogue", None], ids=["unknown_key", "no_key"])
async def test_rogue_subscriber_receives_nothing(
    curve_cluster: CurveCluster, clients: Open, zctx: zmq.asyncio.Context, who: str | None
) -> None:
    r = room()
    sender, member = await members(curve_cluster, clients, r)
    rogue, rogue_monitor = raw_socket(zctx, zmq.SUB, curve_cluster.keys, who)
    rogue.setsockopt(zmq.SUBSCRIBE, b"")
    rogue.connect(curve_cluster.cluster.broker_sub)
    control, control_monitor = raw_socket(zctx, zmq.SUB, curve_cluster.keys, "publisher")
    control.setsockopt(zmq.SUBSCRIBE, room_topic(r))
    control.connect(curve_cluster.cluster.broker_sub)
    await wait_event(rogue_monitor, REFUSED)
    await wait_event(control_monitor, {zmq.EVENT_HANDSHAKE_SUCCEEDED})
    # Chat until the allowed raw subscriber (whose subscription travels
    # asynchronously) sees one: by then the broker has fanned those chats out.
    for n in range(200):
        await sender.chat(f"secret {n}", r)
        assert (await member.recv_chat())["message"] == f"secret {n}"
        if await control.poll(50):
            topic, body = await control.recv_multipart()
            assert topic == room_topic(r) and b"secret" in body
            break
    else:
        pytest.fail("the allowed subscriber never received a chat")
    assert not await rogue.poll(200), "a subscriber without an allowed key received a message"
