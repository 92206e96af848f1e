"""Rooms over two broker shards, with real brokers and edges."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatclient import Publisher
from chatconfig import BrokerEndpoints, BrokerLink
from protocol.shards import shard_of
from tests.conftest import OpenWs
from tests.support.procs import ShardedCluster, running_shards, wait_until


def rooms_on(shard: int, n: int, count: int = 1, prefix: str = "room") -> list[str]:
    found = []
    i = 0
    while len(found) < count:
        room = f"{prefix}-{i}"
        if shard_of(room, n) == shard:
            found.append(room)
        i += 1
    return found


@pytest.fixture(scope="module")
def shared_shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardedCluster]:
    """For the tests that stop no process: each uses rooms of its own."""
    tmp = tmp_path_factory.mktemp("shards")
    with running_shards(2, edges=2, data_dir=tmp, logs=tmp) as cluster:
        yield cluster


@pytest.fixture
def two_shards(tmp_path: Path) -> Iterator[ShardedCluster]:
    """For the tests that kill brokers."""
    with running_shards(2, edges=2, data_dir=tmp_path, logs=tmp_path) as cluster:
        yield cluster


async def test_chats_history_dedupe_and_presence_per_shard(
    shared_shards: ShardedCluster, clients: OpenWs
) -> None:
    a_url, b_url = shared_shards.urls()[:2]
    for shard in (0, 1):
        (room,) = rooms_on(shard, 2, prefix=f"s{shard}")
        alice = await clients(a_url + f"?user=alice{shard}")
        bob = await clients(b_url + f"?user=bob{shard}")
        await alice.send({"type": "join", "payload": {"roomId": room, "presence": True}})
        joined = await alice.recv_type("joined")
        assert joined["payload"]["offset"] == 0
        assert (await alice.recv_type("presence_join"))["payload"]["user"] == f"alice{shard}"
        await bob.join(room)
        assert (await alice.recv_type("presence_join"))["payload"]["user"] == f"bob{shard}"
        for i in range(3):
            await bob.send({"type": "chat", "payload": {
                "roomId": room, "message": f"m{i}", "msgId": f"id-{i}"}})
        # A resend of the same msgId is delivered once, acknowledged as a duplicate.
        await bob.send({"type": "chat", "payload": {
            "roomId": room, "message": "m0", "msgId": "id-0"}})
        got = [await alice.recv_chat() for _ in range(3)]
        assert [(c["message"], c["offset"]) for c in got] == [("m0", 1), ("m1", 2), ("m2", 3)]
        acks = [await bob.recv() for _ in range(7)]
        dup = [f for f in acks if f["type"] == "ack" and f["payload"].get("duplicate")]
        assert len(dup) == 1 and dup[0]["payload"]["offset"] == 1
        # History and recovery come from the room's own shard.
        carol = await clients(a_url)
        await carol.send({"type": "join", "payload": {
            "roomId": room, "since": {"epoch": got[0]["epoch"], "offset": 1}}})
        rec = await carol.recv_type("joined")
        assert rec["payload"]["recovered"] is True
        assert [(await carol.recv_chat())["offset"] for _ in range(2)] == [2, 3]
        await alice.send({"type": "presence", "payload": {"roomId": room}})
        listing = await alice.recv()
        while listing["type"] == "presence_join":  # carol's
            listing = await alice.recv()
        assert listing["type"] == "presence", listing
        users = {u["user"] for u in listing["payload"]["users"]}
        assert {f"alice{shard}", f"bob{shard}"} <= users


async def test_publisher_routes_by_shard(shared_shards: ShardedCluster, clients: OpenWs) -> None:
    rooms = rooms_on(0, 2, prefix="pub") + rooms_on(1, 2, prefix="pub")
    member = await clients(shared_shards.urls()[0])
    for room in rooms:
        await member.join(room)
    with Publisher.open(shared_shards.link(), sender="ticker") as pub:
        for room in rooms:
            pub.publish(room, f"to {room}")
    got = {(await member.recv_chat())["roomId"] for _ in rooms}
    assert got == set(rooms)


async def test_one_shard_down_leaves_the_other_flowing(
    two_shards: ShardedCluster, clients: OpenWs
) -> None:
    (up_room,) = rooms_on(0, 2, prefix="up")
    (down_room,) = rooms_on(1, 2, prefix="down")
    a_url, b_url = two_shards.urls()
    sender = await clients(a_url)
    reader = await clients(b_url)
    for room in (up_room, down_room):
        await sender.join(room)
        await reader.join(room)
    broker1 = two_shards.brokers[1]
    assert broker1 is not None
    broker1.kill9()
    edge = two_shards.edges[0]
    wait_until(lambda: edge.health()[1]["shards"][1]["status"] == "unavailable", 10,
               "shard 1 reported down")
    status, health = edge.health()
    assert status == 200 and health["shardsUp"] == 1
    assert health["shards"][0]["status"] == "ok"
    metrics = edge.metrics()
    assert metrics['chat_broker_up{shard="0"}'] == 1
    assert metrics['chat_broker_up{shard="1"}'] == 0
    # The down shard's room refuses loudly; the other keeps flowing, no pause.
    await sender.chat("lost?", down_room)
    await sender.expect_error("unavailable")
    started = time.monotonic()
    for i in range(20):
        await sender.chat(f"up {i}", up_room)
    offsets = []
    for _ in range(20):
        chat = await reader.recv_chat(timeout=2)
        assert chat["roomId"] == up_room
        offsets.append(chat["offset"])
    assert offsets == list(range(1, 21))
    assert time.monotonic() - started < 2
    # Back, with its durable store: the room goes on in the same epoch.
    two_shards.start_broker(1)
    wait_until(lambda: edge.health()[1]["shardsUp"] == 2, 10, "shard 1 back")
    wait_until(lambda: edge.metrics()["chat_pending_rooms"] == 0, 10, "rooms re-proven")
    await sender.chat("back", down_room)
    back = await reader.recv_chat()
    assert (back["roomId"], back["message"], back["offset"]) == (down_room, "back", 1)
    # No shard reachable at all: only then is the edge 503.
    for broker in two_shards.brokers:
        assert broker is not None
        broker.kill9()
    wait_until(lambda: edge.health()[0] == 503, 10, "503 with every shard down")
    assert edge.health()[1]["shardsUp"] == 0


async def test_misconfigured_edges_are_refused_visibly(
    shared_shards: ShardedCluster, clients: OpenWs
) -> None:
    # Shards listed in the wrong order: every room would go to the wrong broker.
    swapped = ",".join(f"{p}|{s}" for p, s in reversed(shared_shards.shards))
    # A join it cannot prove live is refused at --join-timeout (5 s by default).
    wrong = shared_shards.start_edge(args=["--join-timeout", "1"], shard_list=swapped)
    wait_until(lambda: wrong.health()[1].get("shardsUp") == 2, 10, "swapped edge up")
    (room,) = rooms_on(0, 2, prefix="wrong")
    client = await clients(wrong.url)
    await client.send({"type": "join", "payload": {"roomId": room}})
    # Its shard 0 (the broker that is really shard 1) says so.
    wait_until(lambda: "error" in wrong.health()[1]["shards"][0], 10, "refusal in /healthz")
    assert "belongs to shard 0 of 2" in wrong.health()[1]["shards"][0]["error"]
    # Not joined, not silently split: the join is refused.
    await client.expect_error("unavailable")
    # An edge that counts one shard (only the first listed) is refused by it.
    (first_pub, first_sub) = shared_shards.shards[0]
    single = shared_shards.start_edge(shard_list=f"{first_pub}|{first_sub}")
    wait_until(lambda: "error" in single.health()[1]["shards"][0], 10, "count refused")
    status, body = single.health()
    assert status == 503 and body["shards"][0]["status"] == "unavailable"
    assert "counts 1 shards" in body["shards"][0]["error"]


async def test_memory_only_shard_restart_resyncs_only_its_rooms(
    tmp_path: Path, clients: OpenWs
) -> None:
    with running_shards(2, edges=1, logs=tmp_path) as cluster:
        (kept,) = rooms_on(0, 2, prefix="kept")
        (lost,) = rooms_on(1, 2, prefix="lost")
        member = await clients(cluster.urls()[0])
        for room in (kept, lost):
            await member.join(room)
            await member.chat("before", room)
            assert (await member.recv_chat())["offset"] == 1
        broker1 = cluster.brokers[1]
        assert broker1 is not None
        broker1.kill9()
        cluster.start_broker(1)
        edge = cluster.edges[0]
        wait_until(lambda: edge.metrics()["chat_pending_rooms"] == 0
                   and edge.health()[1]["shardsUp"] == 2, 10, "shard 1 back, rooms live")
        # The restarted shard kept no history: its room starts a new epoch...
        resync = await member.recv_type("resync")
        assert (resync["payload"]["roomId"], resync["payload"]["offset"]) == (lost, 0)
        # ...and the other shard's room goes on in its stream, without a resync.
        await member.chat("after", kept)
        after = await member.recv_chat()
        assert (after["roomId"], after["offset"]) == (kept, 2)
        # Closed before the cluster stops: this thread then blocks, and a client
        # left open could not answer its close frame (the edge would wait out its
        # --shutdown-timeout).
        await member.close()


async def test_a_publisher_that_counts_another_n_is_told(shared_shards: ShardedCluster) -> None:
    pub, sub = shared_shards.shards[0]
    with pytest.raises(ConnectionRefusedError, match="counts 1 shards"):
        Publisher.open(BrokerLink(BrokerEndpoints(pub, sub)), timeout=5).close()


def post(url: str) -> int:
    request = urllib.request.Request(
        url, data=b'{"message":"via http"}', method="POST",
        headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return int(resp.status)


async def test_http_api_publishes_to_each_rooms_shard(
    shared_shards: ShardedCluster, clients: OpenWs
) -> None:
    api = shared_shards.start_edge(args=["--api-key", "k"])
    wait_until(lambda: api.health()[1].get("shardsUp") == 2, 10, "api edge sees both shards")
    rooms = rooms_on(0, 2, prefix="api") + rooms_on(1, 2, prefix="api")
    member = await clients(shared_shards.urls()[0])
    for room in rooms:
        await member.join(room)
    for room in rooms:
        assert await asyncio.to_thread(post, f"{api.http}/api/rooms/{room}/messages") == 202
    got = {(c["roomId"], c["offset"]) for c in [await member.recv_chat() for _ in rooms]}
    assert got == {(room, 1) for room in rooms}
