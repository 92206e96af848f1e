"""The asyncio client library against real edges and a real broker."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable

import pytest

from chatclient import (
    Ack,
    BadJson,
    ChatClient,
    Connected,
    Disconnected,
    Forbidden,
    InvalidPayload,
    Joined,
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
    # One resend after a refusal, not the default five (3.4 s of pauses between them).
    client = await open_client(cluster.urls(), unavailable_retries=1)
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


# Protocol v2: acks, history, recovery and resends across a reconnect.

NO_LIMITS = {"CHAT_RATE_LIMIT": "0"}


async def collect(client: ChatClient, count: int) -> list[ChatDelivery]:
    got: list[ChatDelivery] = []
    async with asyncio.timeout(WAIT * 2):
        while len(got) < count:
            got.append(await client.receive())
    return got


async def test_send_returns_its_ack_and_a_repeated_msgid_is_a_duplicate(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room()
    a = await open_client(client_cluster.urls()[0])
    b = await open_client(client_cluster.urls()[1])
    await a.join(r)
    await b.join(r)
    ack = await a.send(r, "acknowledged")
    assert isinstance(ack, Ack)
    assert (ack.room_id, ack.duplicate) == (r, False) and len(ack.msg_id) == 32
    got = await next_message(b)
    assert (got.msg_id, got.epoch, got.offset) == (ack.msg_id, ack.epoch, ack.offset)
    again = await b.send(r, "acknowledged", msg_id=ack.msg_id)  # another edge, same id
    assert again.duplicate and (again.epoch, again.offset) == (ack.epoch, ack.offset)
    await a.send(r, "marker", msg_id="marker-" + r)
    assert [m.message for m in await collect(b, 1)] == ["marker"]  # nothing in between
    assert a.position(r) is not None


async def test_join_with_history_replays_the_last_chats(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room()
    sender = await open_client(client_cluster.urls()[0])
    await sender.join(r)
    for i in range(8):
        await sender.send(r, f"h{i}")
    late = await open_client(client_cluster.urls()[2])
    await late.join(r, history=3)
    await sender.send(r, "live")
    got = await collect(late, 4)
    assert [m.message for m in got] == ["h5", "h6", "h7", "live"]
    assert [m.offset for m in got] == [6, 7, 8, 9]


async def test_a_reconnect_resumes_every_room_exactly_where_it_left_off(
    fresh_cluster: Callable[..., Cluster], open_client: OpenClient
) -> None:
    cluster = fresh_cluster(edges=2, env=NO_LIMITS)
    first, second = cluster.edges
    r = room()
    client = await open_client(cluster.urls())
    sender = await open_client(second.url)
    await client.join(r)
    await sender.join(r)
    events = client.events()
    texts = [f"m{i}" for i in range(300)]

    async def produce() -> None:
        for i, text in enumerate(texts):
            await sender.send(r, text)
            if i == 100:
                first.proc.kill9()  # the client's edge, while chats keep coming

    producing = asyncio.create_task(produce())
    got: list[ChatDelivery] = []
    rejoined: list[Joined] = []
    async with asyncio.timeout(WAIT * 3):
        while len(got) < len(texts):
            item = await anext(events)
            if isinstance(item, Joined):
                rejoined.append(item)
            elif isinstance(item, ChatDelivery):
                got.append(item)
    await producing
    await events.aclose()
    print(f"received {len(got)} chats, rejoined {len(rejoined) - 1} time(s)")
    assert client.url == second.url and client.generation == 2
    assert [m.message for m in got] == texts  # every chat, once, in order
    assert [m.offset for m in got] == list(range(1, 301))
    assert [j.recovered for j in rejoined] == [None, True]


async def test_sends_in_flight_at_a_drop_are_resent_and_delivered_once(
    fresh_cluster: Callable[..., Cluster], open_client: OpenClient
) -> None:
    cluster = fresh_cluster(edges=2, env=NO_LIMITS)
    first, second = cluster.edges
    r = room()
    client = await open_client(cluster.urls())
    observer = await open_client(second.url)
    await client.join(r)
    await observer.join(r)
    # A send acknowledged before the drop, sent again afterwards: delivered once.
    early = await client.send(r, "early", msg_id="early-" + r)
    acked = 0
    some_acked = asyncio.Event()

    async def send(i: int) -> Ack:
        nonlocal acked
        ack = await client.send(r, f"burst-{i}", msg_id=f"burst-{i}-{r}")
        acked += 1
        if acked == 20:
            some_acked.set()
        return ack

    burst = [asyncio.create_task(send(i)) for i in range(100)]
    await asyncio.wait_for(some_acked.wait(), WAIT)
    first.proc.signal(signal.SIGSTOP)  # from here on nothing is acknowledged...
    burst += [asyncio.create_task(send(i)) for i in range(100, 200)]
    await asyncio.sleep(0)  # one turn of the loop: the new sends are written
    first.proc.kill9()  # ...and the edge dies with those sends in flight
    async with asyncio.timeout(WAIT * 2):
        acks = await asyncio.gather(*burst)
    again = await client.send(r, "early", msg_id="early-" + r)
    assert again.duplicate and (again.epoch, again.offset) == (early.epoch, early.offset)
    await client.send(r, "end")
    got = await collect(observer, 202)
    print(f"{acked} acked, {client.resent} resent, {sum(a.duplicate for a in acks)} duplicates")
    assert client.generation == 2 and client.resent > 0
    assert sorted(m.message for m in got[1:-1]) == sorted(f"burst-{i}" for i in range(200))
    assert got[0].message == "early" and got[-1].message == "end"
    assert [m.offset for m in got] == list(range(1, 203))
    assert {a.offset for a in acks} == set(range(2, 202))
