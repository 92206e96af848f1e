"""Publishing from outside any WebSocket: the Publisher API, HTTP, the ticker example."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import aiohttp
import pytest

from chatclient import Publisher
from tests.clients.conftest import API_KEY, OpenClient
from tests.support.procs import ROOT, Cluster, env_with
from tests.support.texts import assert_for_people

WAIT = 10.0


def room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def post(
    url: str, body: Any, key: str | None = API_KEY, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with session.post(url, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


def messages_url(edge_http: str, room_id: str) -> str:
    return f"{edge_http}/api/rooms/{room_id}/messages"


async def test_publisher_reaches_members_on_every_edge(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room()
    members = [await open_client(url) for url in client_cluster.urls()]
    for m in members:
        await m.join(r)
    publisher = await asyncio.to_thread(
        Publisher.open, client_cluster.link(), sender="backend"
    )
    with publisher:
        first = publisher.publish(r, "from the backend")
        second = publisher.publish(r, "as someone else", sender="billing")
        with pytest.raises(ValueError):
            publisher.publish("bad\nroom", "x")
        with pytest.raises(ValueError):
            publisher.publish(r, "x" * 5000)
    async with asyncio.timeout(WAIT):
        for m in members:
            a, b = await m.receive(), await m.receive()
            assert (a.id, a.sender, a.message) == (first, "backend", "from the backend")
            assert a.room_id == r
            assert (b.id, b.sender) == (second, "billing")
            assert a.ts > 1_600_000_000_000


async def test_http_publish_reaches_every_edge(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room("ops")
    members = [await open_client(url) for url in client_cluster.urls()]
    for m in members:
        await m.join(r)
    status, body = await post(messages_url(client_cluster.edges[1].http, r), {"message": "<b>hi"})
    assert status == 202, body
    assert body["roomId"] == r and body["id"]
    async with asyncio.timeout(WAIT):
        got = [await m.receive() for m in members]
    assert {(g.id, g.sender, g.message) for g in got} == {(body["id"], "api", "<b>hi")}


async def test_http_publish_room_ids_with_slashes_and_unicode(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = f"team/α-{uuid.uuid4().hex[:6]}"
    member = await open_client(client_cluster.urls()[0])
    await member.join(r)
    quoted = r.replace("/", "%2F")
    status, body = await post(messages_url(client_cluster.edges[2].http, quoted), {"message": "x"})
    assert status == 202 and body["roomId"] == r
    async with asyncio.timeout(WAIT):
        assert (await member.receive()).room_id == r


@pytest.mark.parametrize(
    ("key", "status"),
    [(None, 401), ("wrong-key", 401), ("", 401), (API_KEY + "x", 401), (API_KEY[:-1], 401)],
)
async def test_http_publish_refuses_a_missing_or_wrong_key(
    client_cluster: Cluster, key: str | None, status: int
) -> None:
    got, body = await post(messages_url(client_cluster.edges[0].http, "r"), {"message": "x"}, key)
    assert got == status
    assert body["type"] == "error" and body["payload"]["code"] == "unauthorized"


async def test_http_publish_without_a_basic_scheme(client_cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as session, session.post(
        messages_url(client_cluster.edges[0].http, "r"),
        json={"message": "x"},
        headers={"Authorization": f"Basic {API_KEY}"},
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("path_room", "body", "raw", "code"),
    [
        ("ok", None, b"not json", "bad_json"),
        ("ok", {"text": "no message field"}, None, "invalid_payload"),
        ("ok", {"message": 42}, None, "invalid_payload"),
        ("ok", {"message": "x" * 4097}, None, "invalid_payload"),
        ("bad%01room", {"message": "x"}, None, "invalid_payload"),
        ("r" * 129, {"message": "x"}, None, "invalid_payload"),
        ("ok", [], None, "invalid_payload"),
    ],
)
async def test_http_publish_validates_like_the_protocol(
    client_cluster: Cluster, path_room: str, body: Any, raw: bytes | None, code: str
) -> None:
    status, reply = await post(messages_url(client_cluster.edges[0].http, path_room), body, raw=raw)
    assert status == 400
    assert reply["payload"]["code"] == code and reply["payload"]["message"]
    assert_for_people(reply["payload"]["message"])


async def test_http_publish_is_off_without_a_key(shared_cluster: Cluster) -> None:
    status, body = await post(messages_url(shared_cluster.edges[0].http, "r"), {"message": "x"})
    assert status == 404 and body["payload"]["code"] == "not_found"


async def test_edges_list_for_web_clients(client_cluster: Cluster, shared_cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(client_cluster.edges[1].http + "/api/edges") as resp:
            listed = await resp.json()
        assert listed == {"edges": client_cluster.urls(), "self": client_cluster.edges[1].url}
        # Reached as localhost, it still names itself as the list does.
        port = client_cluster.edges[1].port
        async with session.get(
            client_cluster.edges[1].http + "/api/edges", headers={"Host": f"localhost:{port}"}
        ) as resp:
            assert await resp.json() == listed
        async with session.get(shared_cluster.edges[0].http + "/api/edges") as resp:
            alone = await resp.json()
        assert alone["edges"] == [shared_cluster.edges[0].url]


async def test_ticker_example_publishes_prices(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room("prices")
    member = await open_client(client_cluster.urls()[2])
    await member.join(r)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "examples/ticker.py", "--room", r, "--count", "5", "--rate", "50",
        "--seed", "7", cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        env=env_with({
            "CHAT_BROKER_PUB": client_cluster.broker_pub,
            "CHAT_BROKER_SUB": client_cluster.broker_sub,
            "PYTHONPATH": str(ROOT),  # a script's path starts at examples/, not here
        }),
    )
    async with asyncio.timeout(WAIT):
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        prices = [await member.receive() for _ in range(5)]
    assert all(p.sender == "sol-ticker" and p.message.startswith("SOL/USD ") for p in prices)
    assert len({p.id for p in prices}) == 5
