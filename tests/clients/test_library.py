"""The asyncio client library against real edges and a real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from chatclient import (
    BadJson,
    ChatClient,
    Connected,
    Disconnected,
    Forbidden,
    InvalidPayload,
    NotInRoom,
    RateLimited,
    RoomRequired,
    Status,
    TooManyRooms,
    Unauthorized,
    Unavailable,
    UnknownType,
)
from chatclient.errors import ChatError
from protocol.messages import ChatDelivery
from tests.clients.conftest import OpenClient
from tests.support.procs import Cluster, wait_until

WAIT = 10.0


def room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def next_message(client: ChatClient) -> ChatDelivery:
    async with asyncio.timeout(WAIT):
        return await client.receive()


async def test_members_on_every_edge_get_typed_messages(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room()
    clients = [await open_client(url) for url in client_cluster.urls()]
    ids = [await c.join(r) for c in clients]
    await clients[0].send(r, "hello everyone")
    got = [await next_message(c) for c in clients]
    assert all(isinstance(g, ChatDelivery) for g in got)
    assert {(g.room_id, g.message, g.sender) for g in got} == {(r, "hello everyone", ids[0])}
    assert len({g.id for g in got}) == 1
    assert clients[0].is_own(got[0]) and not clients[1].is_own(got[1])


async def test_iterating_and_leaving(client_cluster: Cluster, open_client: OpenClient) -> None:
    r1, r2 = room(), room()
    a = await open_client(client_cluster.urls()[1])
    b = await open_client(client_cluster.urls()[2])
    for r in (r1, r2):
        await a.join(r)
        await b.join(r)
    await b.send(r1, "one")
    assert (await next_message(a)).message == "one"
    await a.leave(r1)
    assert a.rooms == {r2}
    await b.send(r1, "not for a")
    await b.send(r2, "two")
    await b.send(r2, "three")
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(WAIT):
        async for message in a:
            seen.append((message.room_id, message.message))
            if message.message == "three":
                break
    assert seen == [(r2, "two"), (r2, "three")]


async def test_reconnects_to_the_next_edge_and_rejoins(
    fresh_cluster: Callable[..., Cluster], open_client: OpenClient
) -> None:
    cluster = fresh_cluster(edges=2)
    first, second = cluster.edges
    statuses: list[Status] = []
    r = room()
    client = await open_client(cluster.urls(), on_status=statuses.append)
    observer = await open_client(second.url)
    await client.join(r)
    await observer.join(r)
    assert client.url == first.url and client.generation == 1
    old_id = client.connection_id

    first.proc.kill9()
    await asyncio.wait_for(client.wait_connected(after=1), WAIT)

    assert client.url == second.url and client.generation == 2
    assert client.rooms == {r}
    assert client.connection_id != old_id and old_id in client.connection_ids
    assert [type(s) for s in statuses] == [Connected, Disconnected, Connected]
    assert isinstance(statuses[2], Connected) and statuses[2].rooms == (r,)
    await client.send(r, "back again")
    assert (await next_message(observer)).message == "back again"
    await observer.send(r, "welcome back")
    got = [await next_message(client), await next_message(client)]
    assert [g.message for g in got] == ["back again", "welcome back"]


async def test_typed_errors_carry_their_code(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    client = await open_client(client_cluster.urls()[0])
    r1, r2 = room(), room()

    async def refused(kind: type[ChatError], call: object) -> ChatError:
        assert asyncio.iscoroutine(call)
        with pytest.raises(kind) as caught:
            await call
        assert caught.value.code and caught.value.message
        return caught.value

    assert (await refused(BadJson, client.send_raw("not json"))).code == "bad_json"
    assert (await refused(UnknownType, client.send_raw('{"type":"dance"}'))).code == "unknown_type"
    assert (await refused(InvalidPayload, client.join(""))).code == "invalid_payload"
    assert client.rooms == set()
    assert (await refused(NotInRoom, client.send(r1, "hi"))).code == "not_in_room"
    await client.join(r1)
    await client.join(r2)
    assert (await refused(RoomRequired, client.send(None, "hi"))).code == "room_required"
    await client.join(room())  # the third room: this cluster's limit
    assert (await refused(TooManyRooms, client.join(room()))).code == "too_many_rooms"
    await refused(InvalidPayload, client.send(r1, "x" * 5000))
    assert await client.ping() > 0  # still usable after all of that


async def test_rate_limited_is_typed(client_cluster: Cluster, open_client: OpenClient) -> None:
    client = await open_client(client_cluster.urls()[1])
    r = room()
    await client.join(r)
    results = await asyncio.gather(
        *(client.send(r, f"m{i}") for i in range(60)), return_exceptions=True
    )
    refused = [x for x in results if isinstance(x, BaseException)]
    assert refused and all(isinstance(x, RateLimited) for x in refused)
    assert len(refused) < 60


async def test_unavailable_when_the_broker_is_gone(
    fresh_cluster: Callable[..., Cluster], open_client: OpenClient
) -> None:
    cluster = fresh_cluster(edges=1)
    client = await open_client(cluster.urls())
    r = room()
    await client.join(r)
    assert cluster.broker is not None
    cluster.broker.kill9()
    edge = cluster.edges[0]
    await asyncio.to_thread(wait_until, lambda: edge.health()[0] == 503, WAIT, "edge unhealthy")
    with pytest.raises(Unavailable) as caught:
        await client.send(r, "into the void")
    assert caught.value.code == "unavailable"


SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


async def test_tokens_forbidden_and_unauthorized(
    fresh_cluster: Callable[..., Cluster], open_client: OpenClient
) -> None:
    from edge.tokens import mint

    cluster = fresh_cluster(edges=1, env={"CHAT_JWT_SECRET": SECRET})
    with pytest.raises(Unauthorized) as caught:
        await open_client(cluster.urls())
    assert caught.value.status == 401
    token = mint(SECRET, "alice", rooms=["team-*"])
    client = await open_client(cluster.urls(), token=token)
    await client.join("team-a")
    with pytest.raises(Forbidden) as refused:
        await client.join("lobby")
    assert refused.value.code == "forbidden"
    await client.send("team-a", "signed")
    message = await next_message(client)
    assert message.sender == "alice" and client.is_own(message)
