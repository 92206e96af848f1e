"""kill -9 of the broker: health says so, and every room comes back by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tests.conftest import OpenWs
from tests.support.procs import Cluster, wait_until
from tests.support.wsclient import WsClient

ROOMS = 3000
PER_CLIENT = 1000  # rooms per connection in this test (--max-rooms raised to allow it)


def all_live(cluster: Cluster) -> bool:
    for edge in cluster.edges:
        if edge.health()[0] != 200:
            return False
        if edge.metrics()["chat_pending_rooms"] != 0:
            return False
    return True


async def join_many(client: WsClient, rooms: list[str]) -> None:
    for r in rooms:  # pipelined: all joins out, then all replies in
        await client.send({"type": "join", "payload": {"roomId": r}})
    for _ in rooms:
        await client.recv_type("joined", timeout=30)


async def test_healthz_follows_the_broker(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=1)
    edge = cluster.edges[0]
    assert cluster.broker is not None
    client = await clients(edge.url)
    await client.join("h")
    cluster.broker.kill9()
    wait_until(lambda: edge.health()[0] == 503, 10, "healthz 503 with the broker gone")
    _, body = edge.health()
    assert body["status"] == "unavailable"
    assert edge.metrics()['chat_broker_up{shard="0"}'] == 0
    # Chats are refused loudly while the path is down, not silently lost.
    await client.chat("into the void", "h")
    await client.expect_error("unavailable")
    cluster.start_broker()
    wait_until(lambda: edge.health()[0] == 200, 10, "healthz 200 with the broker back")
    wait_until(lambda: edge.metrics()["chat_pending_rooms"] == 0, 10, "room re-verified")
    await client.chat("back", "h")
    # The broker kept no history: its new stream is announced before the chat.
    resync = await client.recv_type("resync")
    assert resync["payload"]["offset"] == 0
    back = await client.recv_chat()
    assert (back["message"], back["epoch"], back["offset"]) == (
        "back", resync["payload"]["epoch"], 1
    )


async def test_thousands_of_rooms_resume_after_broker_kill9(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(
        edges=3, env={"CHAT_MAX_ROOMS": str(PER_CLIENT), "CHAT_RATE_LIMIT": "0"}
    )
    assert cluster.broker is not None
    n = len(cluster.edges)
    rooms = [f"room-{i}" for i in range(ROOMS)]
    # Room i has one member on edge i % n and one on edge (i + 1) % n, so each
    # edge holds 2,000 rooms and every chat must cross the broker.
    memberships: dict[tuple[int, int], list[str]] = {}
    for i, r in enumerate(rooms):
        for e in (i % n, (i + 1) % n):
            slot = len([k for k in memberships if k[0] == e and len(memberships[k]) >= PER_CLIENT])
            memberships.setdefault((e, slot), []).append(r)
    members = {key: await clients(cluster.edges[key[0]].url) for key in memberships}
    await asyncio.gather(*(join_many(members[k], rs) for k, rs in memberships.items()))
    for edge in cluster.edges:
        assert edge.metrics()["chat_subscriptions"] == 2 * ROOMS // n

    cluster.broker.kill9()
    wait_until(
        lambda: all(e.health()[0] == 503 for e in cluster.edges), 10, "edges see it"
    )
    restarted = time.monotonic()
    cluster.start_broker()
    wait_until(lambda: all_live(cluster), 30, "every room re-verified")
    resumed = time.monotonic() - restarted
    print(f"\n{ROOMS} rooms on {n} edges live again {resumed:.2f} s after broker restart")

    # One chat into every room, from the member on edge i % n.
    senders = {}
    for key, rs in memberships.items():
        for r in rs:
            i = int(r.split("-")[1])
            if key[0] == i % n:
                senders[r] = key
    expected: dict[tuple[int, int], set[str]] = {k: set(rs) for k, rs in memberships.items()}
    for r, key in senders.items():
        await members[key].chat(f"after {r}", r)

    async def collect(key: tuple[int, int]) -> set[str]:
        got: set[str] = set()
        resynced: set[str] = set()
        while len(got) < len(expected[key]):
            frame = await members[key].recv(timeout=30)
            payload = frame["payload"]
            if frame["type"] == "resync":  # every room's stream restarted with the broker
                resynced.add(payload["roomId"])
                continue
            assert frame["type"] == "chat", frame
            assert payload["message"] == f"after {payload['roomId']}"
            assert payload["roomId"] in resynced  # told before any later chat
            got.add(payload["roomId"])
        return got

    results = await asyncio.gather(*(collect(k) for k in expected))
    for key, got in zip(expected, results, strict=True):
        assert got == expected[key]
