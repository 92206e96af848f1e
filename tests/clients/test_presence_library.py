"""Identity and presence through the library (protocol v2 section 7): against a scripted
edge for what a real room cannot cheaply show (listings of many pages, what a rejoin
sends), then against real edges and a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chatclient import (
    Backoff,
    ChatClient,
    Member,
    NotInRoom,
    PresenceJoin,
    PresenceLeave,
)
from protocol.codec import PONG_FRAME, encode_joined, encode_presence
from protocol.messages import ChatDelivery
from tests.clients.conftest import OpenClient
from tests.support.procs import Cluster, free_port

WAIT = 10.0


def room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


# A scripted edge: real sockets, canned answers.


@dataclass
class Script:
    """What the scripted edge saw, and the listing it serves in pages of `page` users."""

    users: list[tuple[str, str, int]]
    page: int
    events: bool = True  # what its listing's pages after the first say of events
    queries: list[dict[str, str]] = field(default_factory=list)  # each upgrade's query
    frames: list[list[dict[str, Any]]] = field(default_factory=list)  # per connection
    sockets: list[web.WebSocketResponse] = field(default_factory=list)

    def answer(self, frame: dict[str, Any]) -> list[bytes]:
        payload = frame.get("payload", {})
        match frame.get("type"):
            case "join":
                return [encode_joined(payload["roomId"], "edge.1", "E", 0)]
            case "presence":
                start = int(payload.get("cursor", "0"))
                end = start + self.page
                more = str(end) if end < len(self.users) else None
                return [encode_presence(payload["roomId"], self.users[start:end], more,
                                        self.events or start == 0)]
            case "ping":
                return [PONG_FRAME]
        return []


ScriptedEdge = Callable[[Script], Awaitable[str]]


@pytest.fixture
async def scripted_edge() -> AsyncIterator[ScriptedEdge]:
    """`url = await scripted_edge(script)`: a WebSocket server on a free port that answers
    as `script` says, stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(script: Script) -> str:
        async def upgrade(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            script.queries.append(dict(request.query))
            script.sockets.append(ws)
            seen: list[dict[str, Any]] = []
            script.frames.append(seen)
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    seen.append(frame)
                    for reply in script.answer(frame):
                        await ws.send_str(reply.decode())
            return ws

        app = web.Application()
        app.router.add_get("/", upgrade)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"ws://127.0.0.1:{port}/"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_listing_of_several_pages_is_followed_to_its_end(
    scripted_edge: ScriptedEdge,
) -> None:
    users = [(f"user-{i:04d}", f"User {i}", 1 + i % 3) for i in range(2500)]
    script = Script(users, page=1000)
    async with ChatClient(await scripted_edge(script), user="me", name="Me") as client:
        await client.join("r", presence=True)
        members = await client.presence("r")
    assert members == [Member(*u) for u in users]
    asked = [f["payload"] for f in script.frames[0] if f["type"] == "presence"]
    assert asked == [{"roomId": "r"}, {"roomId": "r", "cursor": "1000"},
                     {"roomId": "r", "cursor": "2000"}]
    assert script.queries == [{"user": "me", "name": "Me"}]


async def test_a_listing_says_when_the_room_sends_no_join_or_leave_events(
    scripted_edge: ScriptedEdge,
) -> None:
    users = [(f"user-{i:04d}", f"User {i}", 1) for i in range(1500)]
    async with ChatClient(await scripted_edge(Script(users, page=1000, events=False)),
                          user="me") as client:
        await client.join("big", presence=True)
        members = await client.presence("big")
    # Events stopped between the pages (the room grew): the listing says so.
    assert members == [Member(*u) for u in users] and members.events is False
    async with ChatClient(await scripted_edge(Script(users[:3], page=1000)),
                          user="me") as client:
        await client.join("small", presence=True)
        assert (await client.presence("small")).events is True


async def test_a_rejoin_asks_for_presence_again_where_it_was_asked(
    scripted_edge: ScriptedEdge,
) -> None:
    script = Script([], page=1000)
    url = await scripted_edge(script)
    client = ChatClient(url, user="a b+c", name="Zoë & co", backoff=Backoff(base=0.01, cap=0.05))
    async with client:
        await client.join("with", presence=True)
        await client.join("without")
        await client.join("turned-off", presence=True)
        await client.join("turned-off")  # the latest join says
        await script.sockets[0].close()  # the edge goes away: the client reconnects
        async with asyncio.timeout(WAIT):
            await client.wait_connected(after=1)
    rejoins = {
        f["payload"]["roomId"]: f["payload"].get("presence")
        for f in script.frames[1] if f["type"] == "join"
    }
    assert rejoins == {"with": True, "without": None, "turned-off": None}
    assert script.queries == [{"user": "a b+c", "name": "Zoë & co"}] * 2


# Real edges.

PRESENCE = (PresenceJoin, PresenceLeave)


async def next_item(client: ChatClient, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    """The next item of `kind` from `client.events()`; the others before it are skipped,
    and so are events about the client's own user (whether a member hears of its own
    arrival is not what these tests are about)."""
    async with asyncio.timeout(WAIT):
        async for item in client.events():
            if isinstance(item, PRESENCE) and item.user == client.user:
                continue
            if isinstance(item, kind):
                return item
    raise AssertionError("the client closed")


async def test_users_names_counts_and_events_across_three_edges(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room("who")
    a, b, c = client_cluster.urls()
    watcher = await open_client(c, user="watcher", name="Watcher")
    await watcher.join(r, presence=True)
    alice1 = await open_client(a, user="alice", name="Alice")
    await alice1.join(r)
    assert await next_item(watcher, PRESENCE) == PresenceJoin(r, "alice", "Alice")
    alice2 = await open_client(b, user="alice", name="Alice")
    await alice2.join(r)
    bob = await open_client(b, user="bob", name="Bob")
    await bob.join(r)
    # alice's second connection is no join of hers: bob's is the next event.
    assert await next_item(watcher, PRESENCE) == PresenceJoin(r, "bob", "Bob")
    for client in (watcher, alice1, bob):
        assert await client.presence(r) == [
            Member("alice", "Alice", 2), Member("bob", "Bob", 1),
            Member("watcher", "Watcher", 1),
        ]

    await alice2.send(r, "hello")
    got = await next_item(watcher, ChatDelivery)  # chats carry the user and the name
    assert (got.sender, got.name, got.message) == ("alice", "Alice", "hello")
    own = await next_item(alice2, ChatDelivery)
    same_user = await next_item(alice1, ChatDelivery)
    assert alice2.is_own(own) and not alice1.is_own(same_user)  # another client

    await alice1.leave(r)  # alice is still there on her other connection
    await bob.leave(r)
    assert await next_item(watcher, PRESENCE) == PresenceLeave(r, "bob")
    await alice2.close()  # a close handshake: her last connection leaves at once
    assert await next_item(watcher, PRESENCE) == PresenceLeave(r, "alice")
    assert await watcher.presence(r) == [Member("watcher", "Watcher", 1)]


async def test_a_room_above_the_events_limit_lists_without_events(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room("crowd")  # the shared cluster's rule: crowd-* rooms, events up to 1 member
    a, b, _ = client_cluster.urls()
    watcher = await open_client(a, user="watcher", name="Watcher")
    await watcher.join(r, presence=True)
    assert (await watcher.presence(r)).events is True  # one member: within the limit
    alice = await open_client(b, user="alice", name="Alice")
    await alice.join(r)
    async with asyncio.timeout(WAIT):
        listing = await watcher.presence(r)
        while len(listing) < 2:  # alice's arrival is on its way to the room's owner
            listing = await watcher.presence(r)
    assert listing == [Member("alice", "Alice", 1), Member("watcher", "Watcher", 1)]
    assert listing.events is False
    await alice.send(r, "hello")
    # A join would come before alice's first chat, in the room's stream: none did.
    async with asyncio.timeout(WAIT):
        async for item in watcher.events():
            assert not (isinstance(item, PresenceJoin) and item.user == "alice"), item
            if isinstance(item, ChatDelivery):
                assert item.message == "hello"
                break


async def test_only_members_may_list_and_only_joins_with_presence_get_events(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room()
    first, second, _ = client_cluster.urls()
    quiet = await open_client(first, user="quiet")
    with pytest.raises(NotInRoom):
        await quiet.presence(r)
    await quiet.join(r)  # without presence: no events
    loud = await open_client(second, user="loud")
    await loud.join(r, presence=True)
    third = await open_client(second, user="third", name="Third")
    await third.join(r)
    assert await next_item(loud, PRESENCE) == PresenceJoin(r, "third", "Third")
    await third.send(r, "marker")
    # A join reaches a subscribed member before that user's chats: quiet, had it been
    # sent one, would have it before this.
    assert isinstance(await next_item(quiet, (ChatDelivery, *PRESENCE)), ChatDelivery)
    assert [m.user for m in await quiet.presence(r)] == ["loud", "quiet", "third"]


async def test_events_continue_after_a_reconnect_to_another_edge(
    fresh_cluster: Callable[..., Cluster], open_client: OpenClient
) -> None:
    cluster = fresh_cluster(edges=2)
    first, second = cluster.edges
    r = room()
    watcher = await open_client(
        [first.url, second.url], user="watcher", backoff=Backoff(base=0.05, cap=0.2)
    )
    await watcher.join(r, presence=True)
    generation = watcher.generation
    first.proc.kill9()
    await asyncio.wait_for(watcher.wait_connected(after=generation), WAIT)
    assert watcher.url == second.url
    late = await open_client(second.url, user="late", name="Late")
    await late.join(r)
    assert await next_item(watcher, PRESENCE) == PresenceJoin(r, "late", "Late")
