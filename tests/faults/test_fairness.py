"""A flood from the broker must not starve the WebSocket side of an edge."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import zmq

from protocol.codec import encode_chat
from protocol.stream import pack
from protocol.topics import edge_topic, probe_body, room_topic
from tests.support.procs import Cluster
from tests.support.rawws import RawWs

FLOOD = 300_000


def live_publisher(cluster: Cluster, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    """A PUB at the broker, used only once its messages are known to get through."""
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(cluster.broker_pub)
    sub = ctx.socket(zmq.SUB)
    sub.connect(cluster.broker_sub)
    topic = edge_topic("fairness-test")
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    while True:  # the slow joiner, handled: probe until one comes back
        pub.send_multipart([topic, probe_body("fairness-test", 1)])
        if sub.poll(50):
            sub.recv_multipart()
            break
    sub.close(linger=0)
    return pub


def count_until_pong(client: RawWs) -> int:
    seen = 0
    while client.read_json()["type"] != "pong":
        seen += 1
    return seen


def last_of(client: RawWs, count: int) -> dict[str, object]:
    frame: dict[str, object] = {}
    for _ in range(count):
        frame = client.read_json()
    return frame


async def test_pings_are_answered_in_the_middle_of_a_flood(
    cluster_factory: Callable[..., Cluster],
    raw_clients: Callable[..., RawWs],
    zmq_context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    cluster = cluster_factory(
        edges=1,
        env={"CHAT_RATE_LIMIT": "0", "CHAT_HWM": "0"},  # nothing may drop in this flood
        # The raw client reads for a long while without a word (it never
        # answers pings): heartbeats are not what this test is about.
        edge_args=["--outbox-bytes", str(1 << 28), "--heartbeat", "300"],
    )
    edge = cluster.edges[0]
    pub = await asyncio.to_thread(live_publisher, cluster, zmq_context)
    client = raw_clients(edge.port, rcvbuf=1 << 22, timeout=60)
    topic = room_topic("flood")
    bodies = [encode_chat("flood", f"m{i}", f"x{i}", "flooder", 0) for i in range(FLOOD)]

    def flood() -> None:
        # Faster than one edge can fan out: its SUB queue grows. Ten chats a
        # message, as an edge publishes a burst, so the flood is queued well
        # within the broker's 3 s heartbeat timeout of the frozen edge.
        for i in range(0, FLOOD, 10):
            pub.send_multipart([topic, pack(bodies[i : i + 10])])

    client.send_json({"type": "join", "payload": {"roomId": "flood"}})
    assert client.read_json()["type"] == "joined"
    # Freeze the edge and queue the whole flood in front of it; once it
    # thaws and its first frame is out, ask for a pong.
    edge.proc.signal(signal.SIGSTOP)
    try:
        await asyncio.to_thread(flood)
    finally:
        edge.proc.signal(signal.SIGCONT)
    first = await asyncio.to_thread(client.read_json)
    assert first["payload"]["message"] == "m0"
    client.send_json({"type": "ping"})
    before_pong = 1 + await asyncio.to_thread(count_until_pong, client)
    print(f"\npong after {before_pong} of {FLOOD} flooded messages")
    # An edge that drained its SUB socket without yielding would answer
    # only once the flood was over.
    assert before_pong < FLOOD // 2
    last = await asyncio.to_thread(last_of, client, FLOOD - before_pong)
    assert last["payload"] == {**last["payload"], "message": f"m{FLOOD - 1}"}  # type: ignore[dict-item]
