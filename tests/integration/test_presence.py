"""Presence on real processes (protocol v2 section 7): listings merged per user over
edges, join and leave events once per user, in order with the room's chats."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import OpenWs
from tests.support.procs import Cluster, running_cluster
from tests.support.wsclient import WsClient

GRACE = 1.5  # seconds: --presence-grace, short for the tests


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # The broker holds leaves back for --presence-rebuild after it starts: 1 s
    # is enough for a broker no edge has heartbeated before.
    env = {"CHAT_RATE_LIMIT": "0", "CHAT_PRESENCE_GRACE": str(GRACE),
           "CHAT_PRESENCE_REBUILD": "1"}
    with running_cluster(edges=3, env=env) as c:
        asyncio.run(leaves_are_published(c))
        yield c


async def leaves_are_published(cluster: Cluster) -> None:
    """A broker just started holds leaves back while the edges' heartbeats
    rebuild its presence (--presence-rebuild): wait until a leave comes through."""
    watcher = await WsClient.connect(f"{cluster.edges[0].url}?user=warm-watcher")
    other = await WsClient.connect(f"{cluster.edges[0].url}?user=warm-other")
    try:
        await join(watcher, "warm-up")
        await join(other, "warm-up", presence=False)
        await other.send({"type": "leave", "payload": {"roomId": "warm-up"}})
        while True:
            frame = await watcher.recv(timeout=20)
            if frame["type"] == "presence_leave":
                return
    finally:
        await watcher.close()
        await other.close()


def room() -> str:
    return "p-" + uuid.uuid4().hex[:10]


async def join(c: WsClient, room_id: str, presence: bool = True) -> None:
    await c.send({"type": "join", "payload": {"roomId": room_id, "presence": presence}})
    await c.recv_type("joined")


async def next_of(c: WsClient, kind: str) -> dict[str, Any]:
    """The next frame of `kind`, past chats and events."""
    while True:
        frame = await c.recv()
        if frame["type"] == kind:
            payload: dict[str, Any] = frame["payload"]
            return payload
        assert frame["type"] in ("chat", "presence_join", "presence_leave"), frame


async def who(c: WsClient, room_id: str) -> dict[str, tuple[str, int]]:
    await c.send({"type": "presence", "payload": {"roomId": room_id}})
    payload = await next_of(c, "presence")
    assert payload["roomId"] == room_id and "next" not in payload
    return {u["user"]: (u["name"], u["connections"]) for u in payload["users"]}


async def some_events(c: WsClient, count: int) -> list[tuple[str, str]]:
    seen = []
    while len(seen) < count:
        frame = await c.recv()
        if frame["type"] in ("presence_join", "presence_leave"):
            seen.append((frame["type"], frame["payload"]["user"]))
    return seen


async def events(c: WsClient, until_chat: str, timeout: float = 10) -> list[tuple[str, str]]:
    """Presence events (kind, user) until the chat `until_chat` arrives."""
    seen = []
    while True:
        frame = await c.recv(timeout=timeout)
        kind, payload = frame["type"], frame["payload"]
        if kind == "chat" and payload["message"] == until_chat:
            return seen
        if kind in ("presence_join", "presence_leave"):
            seen.append((kind, payload["user"]))


async def test_users_are_merged_over_connections_and_edges(
    cluster: Cluster, clients: OpenWs
) -> None:
    r = room()
    a, b, c = (e.url for e in cluster.edges)
    watcher = await clients(f"{c}?user=watcher")
    await join(watcher, r)
    alice1 = await clients(f"{a}?user=alice&name=Alice")
    alice2 = await clients(f"{b}?user=alice&name=Alice%20two")
    bob = await clients(f"{c}?user=bob&name=Bob")
    for member in (alice1, alice2, bob):
        await join(member, r, presence=False)
    await watcher.chat("mark 1", r)
    assert await events(watcher, "mark 1") == [  # its own join too
        ("presence_join", "watcher"), ("presence_join", "alice"), ("presence_join", "bob")
    ]
    listed = await who(bob, r)
    assert listed == {"alice": ("Alice two", 2), "bob": ("Bob", 1), "watcher": ("watcher", 1)}
    # Alice's first connection leaves: she is still here, no event.
    await alice1.send({"type": "leave", "payload": {"roomId": r}})
    await next_of(alice1, "left")
    await alice2.close()  # a close handshake: a clean leave, at once
    await bob.send({"type": "leave", "payload": {"roomId": r}})
    await next_of(bob, "left")
    # Leaves from two edges: in either order, each once.
    assert sorted(await some_events(watcher, 2)) == [
        ("presence_leave", "alice"), ("presence_leave", "bob")
    ]
    await watcher.chat("mark 2", r)
    assert await events(watcher, "mark 2") == []  # and nothing else
    assert await who(watcher, r) == {"watcher": ("watcher", 1)}


async def test_a_join_comes_before_the_users_first_chat(
    cluster: Cluster, clients: OpenWs
) -> None:
    r = room()
    a, b, c = (e.url for e in cluster.edges)
    watchers = [await clients(f"{url}?user=w{i}") for i, url in enumerate((a, b, c))]
    for w in watchers:
        await join(w, r)
    for i in range(5):
        newcomer = await clients(f"{(a, b, c)[i % 3]}?user=new{i}")
        # Join and chat at once, without waiting for `joined`.
        await newcomer.send({"type": "join", "payload": {"roomId": r}})
        await newcomer.chat(f"hello {i}", r)
        await newcomer.recv_type("joined")
        for w in watchers:
            seen: list[Any] = []
            while True:
                frame = await w.recv()
                if frame["type"] == "presence_join" and frame["payload"]["user"] == f"new{i}":
                    seen.append("join")
                elif frame["type"] == "chat" and frame["payload"]["message"] == f"hello {i}":
                    seen.append("chat")
                    break
            assert seen == ["join", "chat"]


async def test_presence_from_a_non_member_is_not_in_room(
    cluster: Cluster, clients: OpenWs
) -> None:
    c = await clients(cluster.edges[0].url)
    await c.send({"type": "presence", "payload": {"roomId": room()}})
    await c.expect_error("not_in_room")
