"""Chats dropped between the broker and an edge reach that edge's members anyway,
repaired from the room's history: every offset once, in order, no resync
(protocol v2 section 6)."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from protocol.codec import encode_chat
from protocol.stream import REPLY_MARK, HistoryReply, read_reply, read_stamp
from protocol.topics import edge_topic, probe_body, room_topic
from tests.conftest import OpenWs
from tests.support.procs import Cluster
from tests.support.wsclient import WsClient

HWM = 10  # messages per ZeroMQ pipe
# About 16 MB: more than the kernel's socket buffers between the broker and
# a frozen edge hold (a few MB on loopback), so the pipe fills and drops.
CHATS = 15_000
TEXT = "x" * 1000
ROOM = "gap"
TIMEOUT = 20.0
OWN = edge_topic("gap-test")  # the test's own topic, for its barrier probes


def barrier_publisher(
    cluster: Cluster, ctx: zmq.Context[zmq.Socket[bytes]]
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """A PUB at the broker that never drops (no high-water mark on its side), and a
    SUB hearing its own probes: a probe back means the broker has sequenced and
    forwarded everything this PUB sent before it."""
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(cluster.broker_pub)
    sub = ctx.socket(zmq.SUB)
    sub.connect(cluster.broker_sub)
    sub.setsockopt(zmq.SUBSCRIBE, OWN)
    return pub, sub


def barrier(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], tokens: Iterator[int]) -> bytes:
    """Probe until one comes back (the first time: the slow joiner, handled); return it."""
    for _ in range(int(TIMEOUT / 0.05)):
        probe = probe_body("gap-test", next(tokens))
        pub.send_multipart([OWN, probe])
        while sub.poll(50):
            if sub.recv_multipart()[1] == probe:
                return probe
    raise TimeoutError("the broker never passed the test's probe back")


def replies_witness(
    cluster: Cluster, ctx: zmq.Context[zmq.Socket[bytes]], instance: str
) -> zmq.Socket[bytes]:
    """A SUB on the edge's own topic: it hears what the broker sends that edge
    for itself (probes, acks, and the replies to its history queries). It
    hears the test's barrier probes too, in the order the broker sent them."""
    sub = ctx.socket(zmq.SUB)
    sub.connect(cluster.broker_sub)
    sub.setsockopt(zmq.SUBSCRIBE, OWN)
    sub.setsockopt(zmq.SUBSCRIBE, edge_topic(instance))
    # Live once the edge's own health probe (one per --probe-interval) reaches it too.
    if not sub.poll(int(TIMEOUT * 1000)):
        raise TimeoutError("no probe of the edge's came through the witness")
    sub.recv_multipart()
    return sub


def history_replies(
    witness: zmq.Socket[bytes], pub: zmq.Socket[bytes], tokens: Iterator[int]
) -> list[HistoryReply]:
    """The replies to the edge's queries about ROOM that reached the witness
    before one of the barrier probes sent now: every reply the broker sent
    before it (the witness's pipe has a tiny high-water mark too, so a probe
    is sent again until one gets through)."""
    out = []
    sent: set[bytes] = set()
    for _ in range(int(TIMEOUT / 0.05)):
        probe = probe_body("gap-test", next(tokens))
        sent.add(probe)
        pub.send_multipart([OWN, probe])
        while witness.poll(50):
            topic, *parts = witness.recv_multipart()
            if topic == OWN and parts[0] in sent:
                return out
            for part in parts:
                if part[:1] == REPLY_MARK:
                    reply = read_reply(part)
                    if reply.room_id == ROOM:
                        out.append(reply)
    raise TimeoutError("no barrier probe reached the witness")


async def read_through(client: WsClient, offset: int) -> list[dict[str, Any]]:
    """Frames up to the chat at `offset` (or anything else that comes instead)."""
    frames = []
    while True:
        frame = await client.recv(TIMEOUT)
        frames.append(frame)
        if frame["type"] != "chat" or frame["payload"]["offset"] >= offset:
            return frames


async def test_chats_dropped_on_the_way_to_an_edge_are_repaired_from_history(
    cluster_factory: Callable[..., Cluster],
    clients: OpenWs,
    zmq_context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    cluster = cluster_factory(
        edges=1,
        env={
            "CHAT_RATE_LIMIT": "0",
            "CHAT_HWM": str(HWM),  # the broker's pipes: where a frozen edge's chats drop
            "CHAT_HISTORY_SIZE": str(2 * CHATS),  # the broker holds every chat of the test
        },
        # The edge's own pipes unbounded: once thawed, its I/O thread drains
        # the socket buffers at once, so the broker's pipe has room again
        # for the replies to the edge's queries. The listener gets the whole
        # repair in one go.
        edge_args=["--hwm", "0", "--outbox-bytes", str(1 << 28)],
    )
    edge = cluster.edges[0]
    instance = edge.health()[1]["instance"]
    witness = await asyncio.to_thread(replies_witness, cluster, zmq_context, instance)
    pub, own = await asyncio.to_thread(barrier_publisher, cluster, zmq_context)
    tokens = itertools.count(1)
    await asyncio.to_thread(barrier, pub, own, tokens)
    listener = await clients(edge.url, max_msg_size=0)
    joined = (await listener.join(ROOM))["payload"]
    assert joined["offset"] == 0
    epoch = joined["epoch"]
    topic = room_topic(ROOM)
    bodies = [encode_chat(ROOM, TEXT, f"gap-{i}", "flooder", 0) for i in range(CHATS)]

    def flood() -> None:
        for body in bodies:  # each its own message: the high-water mark counts messages
            pub.send_multipart([topic, body])
        # Every chat sequenced and handed to the edge's pipe, or dropped at its HWM.
        barrier(pub, own, tokens)

    edge.proc.signal(signal.SIGSTOP)
    try:
        await asyncio.to_thread(flood)
    finally:
        edge.proc.signal(signal.SIGCONT)
    # Whatever the listener receives must be 1, 2, 3, ... each once, up to
    # the last chat of the flood: a hole at its very end has no later chat
    # to show it, and is found by the probe the edge sends once the room has
    # gone quiet.
    frames = await read_through(listener, CHATS)
    assert [f for f in frames if f["type"] != "chat"] == []  # no resync, nothing else
    payloads = [f["payload"] for f in frames]
    assert [p["offset"] for p in payloads] == list(range(1, CHATS + 1))
    assert {p["epoch"] for p in payloads} == {epoch}
    assert [p["id"] for p in payloads] == [f"gap-{i}" for i in range(CHATS)]
    sent = CHATS

    # The edge really lost chats on the way and asked the broker for them: the
    # replies to its queries carry the offsets that did not come live.
    replies = await asyncio.to_thread(history_replies, witness, pub, tokens)
    repaired = [
        stamp[1] for reply in replies for chat in reply.chats if (stamp := read_stamp(chat))
    ]
    print(f"\n{len(repaired)} of {CHATS} chats dropped on the way to the edge, "
          f"repaired from history in {len(replies)} replies")
    assert replies and all(r.complete and r.epoch == epoch for r in replies)
    # Each missing chat asked for once, in order.
    assert repaired and repaired == sorted(set(repaired))
    assert set(repaired) <= set(range(1, sent + 1))
