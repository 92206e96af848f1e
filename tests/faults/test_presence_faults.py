"""Presence through failures (protocol v2 section 7), on real processes: abrupt
drops within and past the grace, an edge killed, the broker restarted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import OpenWs
from tests.support.procs import Cluster, wait_until
from tests.support.wsclient import WsClient

GRACE = 1.5  # seconds: --presence-grace, short for the tests
HEARTBEAT = 0.25  # seconds: --presence-heartbeat, eight times the default rate
# A broker holds leaves back for --presence-rebuild after it starts. The first
# broker of a cluster has nothing to rebuild: 1 s.
ENV = {"CHAT_RATE_LIMIT": "0", "CHAT_JOIN_RATE_LIMIT": "0", "CHAT_MAX_CONNS_PER_IP": "0",
       "CHAT_PRESENCE_GRACE": str(GRACE), "CHAT_PRESENCE_HEARTBEAT": str(HEARTBEAT),
       "CHAT_PRESENCE_REBUILD": "1"}
# A restarted broker's window must hold every edge's reconnection (ZeroMQ
# backs off up to 1 s) and its next heartbeat: 3 s, half the default.
REBUILD_AFTER_RESTART = 3.0
# An edge that missed six heartbeats is dead (three by default).
EDGE_TIMEOUT = 6 * HEARTBEAT


async def join(c: WsClient, room_id: str, presence: bool = False) -> None:
    await c.send({"type": "join", "payload": {"roomId": room_id, "presence": presence}})
    while (await c.recv())["type"] != "joined":
        pass


def vanish(c: WsClient) -> None:
    """A TCP reset: no close frame, as when a phone loses its network."""
    c.ws._response.connection.transport.abort()  # type: ignore[union-attr]


async def next_event(c: WsClient, timeout: float = 20) -> tuple[str, str]:
    while True:
        frame = await c.recv(timeout=timeout)
        if frame["type"] in ("presence_join", "presence_leave"):
            return frame["type"], frame["payload"]["user"]


async def events_until(c: WsClient, mark: str) -> list[tuple[str, str]]:
    seen = []
    while True:
        frame = await c.recv()
        if frame["type"] == "chat" and frame["payload"]["message"] == mark:
            return seen
        if frame["type"] in ("presence_join", "presence_leave"):
            seen.append((frame["type"], frame["payload"]["user"]))


async def who(c: WsClient, room_id: str) -> dict[str, int]:
    await c.send({"type": "presence", "payload": {"roomId": room_id}})
    while True:
        frame = await c.recv()
        if frame["type"] == "presence":
            return {u["user"]: u["connections"] for u in frame["payload"]["users"]}


async def settled(watcher: WsClient, other: WsClient, room_id: str) -> None:
    """Until the broker publishes leaves (it holds them back for a few seconds
    after it starts, while edges' heartbeats rebuild its presence)."""
    await join(other, room_id)
    await other.send({"type": "leave", "payload": {"roomId": room_id}})
    while await next_event(watcher) != ("presence_leave", "settle"):
        pass


async def test_a_blip_within_the_grace_is_silent_and_a_drop_past_it_is_one_leave(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=2, env=ENV)
    a, b = (e.url for e in cluster.edges)
    r = "blip"
    watcher = await clients(f"{b}?user=watcher")
    await join(watcher, r, presence=True)
    await settled(watcher, await clients(f"{a}?user=settle"), r)
    alice = await clients(f"{a}?user=alice")
    carol = await clients(f"{a}?user=carol")
    await join(alice, r)
    await join(carol, r)
    assert sorted([await next_event(watcher), await next_event(watcher)]) == [
        ("presence_join", "alice"), ("presence_join", "carol")]
    vanish(alice)
    vanish(carol)
    dropped = time.monotonic()
    back = await clients(f"{b}?user=alice")  # on another edge, within the grace
    await join(back, r)
    # Carol does not come back: her leave comes once her grace is over, and
    # by then a leave of Alice's would have come too.
    assert await next_event(watcher) == ("presence_leave", "carol")
    waited = time.monotonic() - dropped
    assert waited >= GRACE * 0.9, waited
    await watcher.chat("mark", r)
    assert await events_until(watcher, "mark") == []
    assert await who(watcher, r) == {"watcher": 1, "alice": 1}
    print(f"\nleave {waited:.2f} s after an abrupt drop (grace {GRACE} s)")


USERS = 500
ROOMS = 50


async def test_an_edge_killed_takes_its_users_out_within_grace_plus_ten_seconds(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(
        edges=2, env={**ENV, "CHAT_PRESENCE_EDGE_TIMEOUT": str(EDGE_TIMEOUT)})
    doomed, survivor = cluster.edges
    rooms = [f"k-{i}" for i in range(ROOMS)]
    watchers = {r: await clients(f"{survivor.url}?user=w-{r}") for r in rooms}
    for r, w in watchers.items():
        await join(w, r, presence=True)
    await settled(watchers[rooms[0]], await clients(f"{doomed.url}?user=settle"), rooms[0])
    users = [await WsClient.connect(f"{doomed.url}?user=u{i}") for i in range(USERS)]
    try:
        await asyncio.gather(*(join(u, rooms[i % ROOMS]) for i, u in enumerate(users)))

        async def joins(r: str) -> set[str]:
            seen: set[str] = set()
            while len(seen) < USERS // ROOMS:
                kind, user = await next_event(watchers[r])
                assert kind == "presence_join"
                if user != f"w-{r}":  # the watcher's own join comes too
                    seen.add(user)
            return seen

        await asyncio.gather(*(joins(r) for r in rooms))
        doomed.proc.kill9()
        killed = time.monotonic()

        async def leaves(r: str) -> float:
            seen: set[str] = set()
            while len(seen) < USERS // ROOMS:
                kind, user = await next_event(watchers[r], timeout=GRACE + 15)
                assert kind == "presence_leave", (kind, user)
                seen.add(user)
            return time.monotonic() - killed

        took = await asyncio.gather(*(leaves(r) for r in rooms))
    finally:
        for u in users:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(u.close(), 2)
    print(f"\n{USERS} users of a killed edge left {ROOMS} rooms within {max(took):.1f} s "
          f"(grace {GRACE} s, edge timeout {EDGE_TIMEOUT} s)")
    assert max(took) <= GRACE + 10
    for r, w in watchers.items():
        assert await who(w, r) == {f"w-{r}": 1}
    # The edge comes back (as supervisord restarts it): nothing of its old
    # members comes back with it; its new members do.
    again = cluster.start_edge(port=doomed.port)
    again.wait_healthy()
    newcomer = await clients(f"{again.url}?user=newcomer")
    await join(newcomer, rooms[0])
    assert await next_event(watchers[rooms[0]]) == ("presence_join", "newcomer")
    assert await who(newcomer, rooms[0]) == {f"w-{rooms[0]}": 1, "newcomer": 1}


async def test_a_broker_restart_rebuilds_presence_without_a_leave_or_a_join(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=3, env={**ENV})  # a copy: the restart changes it
    assert cluster.broker is not None
    urls = [e.url for e in cluster.edges]
    r = "restart"
    watcher = await clients(f"{urls[0]}?user=watcher")
    await join(watcher, r, presence=True)
    await settled(watcher, await clients(f"{urls[1]}?user=settle"), r)
    members: list[Any] = []
    for i in range(9):
        c = await clients(f"{urls[i % 3]}?user=m{i % 6}")  # 6 users, 9 connections
        await join(c, r)
        members.append(c)
    control = await clients(f"{urls[2]}?user=control")
    await join(control, r)
    joined = set()
    while len(joined) < 7:
        kind, user = await next_event(watcher)
        assert kind == "presence_join"
        joined.add(user)
    before = await who(watcher, r)
    cluster.broker.kill9()
    wait_until(lambda: all(e.health()[0] == 503 for e in cluster.edges), 10, "edges see it")
    cluster.extra_env["CHAT_PRESENCE_REBUILD"] = str(REBUILD_AFTER_RESTART)
    cluster.start_broker()
    wait_until(lambda: all(e.health()[0] == 200 for e in cluster.edges), 15, "broker back")
    # The control user leaves after the restart: the broker holds that leave
    # back until the edges' heartbeats have rebuilt its presence, so when it
    # comes, any flapping of the others would have come before it.
    await control.send({"type": "leave", "payload": {"roomId": r}})
    assert await next_event(watcher, timeout=30) == ("presence_leave", "control")
    await watcher.chat("mark", r)
    assert await events_until(watcher, "mark") == []
    after = await who(watcher, r)
    del before["control"]
    assert after == before
