"""What one misbehaving connection can cost an edge, and what it cannot do."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from protocol.frames import masked_frame
from protocol.websocket import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT
from tests.conftest import OpenWs
from tests.support.procs import Cluster, wait_until
from tests.support.rawws import RawWs


def counted(cluster: Cluster, reason: str) -> float:
    return cluster.edges[0].metrics().get(f'chat_disconnects_total{{reason="{reason}"}}', 0)


async def test_replies_to_a_client_that_never_reads_are_bounded(
    cluster_factory: Callable[..., Cluster], raw_clients: Callable[..., RawWs]
) -> None:
    cluster = cluster_factory(edges=1)
    edge = cluster.edges[0]
    rss_before = edge.rss()
    raw = raw_clients(edge.port, rcvbuf=4096)
    # Each 6-byte binary frame earns a ~95-byte error reply: 40x amplification.
    burst = masked_frame(OP_BINARY, b"") * 20_000
    try:
        for _ in range(40):
            await asyncio.to_thread(raw.send_raw, burst)
            if counted(cluster, "slow"):
                break
    except OSError:
        pass  # the edge hung up on us mid-burst: exactly what should happen
    wait_until(lambda: counted(cluster, "slow") == 1, 15, "flooding reader cut off as slow")
    raw.close()  # hang up now: the edge must let go of the connection
    wait_until(lambda: edge.metrics()["chat_connections"] == 0, 15, "connection gone")
    assert edge.rss() - rss_before < 48 * 1024 * 1024


async def test_a_cut_off_client_that_keeps_talking_still_gets_its_close_frame(
    cluster_factory: Callable[..., Cluster], raw_clients: Callable[..., RawWs], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=1, env={"CHAT_RATE_LIMIT": "0"})
    edge = cluster.edges[0]
    slow = raw_clients(edge.port, rcvbuf=65536)
    slow.send_json({"type": "join", "payload": {"roomId": "busy"}})
    assert slow.read_json()["type"] == "joined"
    sender = await clients(edge.url)
    await sender.join("busy")
    text = "x" * 4000
    i = 0
    while not counted(cluster, "slow"):
        for _ in range(50):
            await sender.chat(text, "busy")
            await sender.recv_chat()
            i += 1
        assert i < 20_000, "never cut off"
    # The client speaks after the cut (a heartbeat, a pong): the edge must
    # not answer that with a reset that destroys what it had queued.
    slow.send_raw(masked_frame(OP_PING, b"still here?"))
    code, reason, _ = await asyncio.to_thread(slow.read_until_close)
    assert code == 1013 and "slow" in reason


async def test_frames_after_a_close_in_the_same_read_are_ignored(
    cluster_factory: Callable[..., Cluster], raw_clients: Callable[..., RawWs], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=1)
    edge = cluster.edges[0]
    witness = await clients(edge.url)
    raw = raw_clients(edge.port)
    await witness.join("after")
    raw.send_raw(
        masked_frame(OP_CLOSE, struct.pack("!H", 1000))
        + masked_frame(OP_TEXT, b'{"type":"join","payload":{"roomId":"after"}}')
        + masked_frame(OP_TEXT, b'{"type":"chat","payload":{"roomId":"after","message":"ghost"}}')
    )
    code, _, texts = await asyncio.to_thread(raw.read_until_close)
    assert (code, texts) == (1000, 0)
    await witness.chat("marker", "after")
    assert (await witness.recv_chat())["message"] == "marker"  # no ghost before it
    assert edge.metrics()["chat_messages_in_total"] == 1
