"""Per-connection rate limits on real edges: errors, the 1008 close, and calm neighbours."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.security.conftest import token, with_token
from tests.support.procs import Cluster
from tests.support.wsclient import Closed, WsClient

Open = Callable[..., Any]
FLOOD_PACE = 0.005  # seconds between flood chats: ten times the default rate of 20/s
CALM_PACE = 0.2  # a well-behaved client: five chats a second, well under the rate


def room() -> str:
    return f"limits-{uuid.uuid4().hex[:10]}"


async def calm_round(client: WsClient, name: str, r: str, n: int) -> None:
    """Chat and wait for the echo, ignoring others' chats; any error fails the test."""
    await client.chat(f"{name} {n}", r)
    while True:
        frame = await client.recv()
        assert frame["type"] == "chat", frame
        if frame["payload"]["from"] == name:
            assert frame["payload"]["message"] == f"{name} {n}"
            return


async def test_flood_gets_rate_limited(secure_cluster: Cluster, clients: Open) -> None:
    r = room()
    url = secure_cluster.edges[0].url
    flooder = await clients(with_token(url, token("flooder")))
    calm = await clients(with_token(secure_cluster.edges[1].url, token("calm")))
    await flooder.join(r)
    await calm.join(r)
    sent = 100
    for i in range(sent):
        await flooder.chat(f"flood {i}", r)
    limited = echoed = 0
    while limited + echoed < sent:
        frame = await flooder.recv()
        if frame["type"] == "error":
            assert frame["payload"]["code"] == "rate_limited", frame
            limited += 1
        else:
            echoed += 1
    assert limited > 0
    assert echoed >= 40  # the burst
    for n in range(5):
        await calm_round(calm, "calm", r, n)


async def test_sustained_flood_is_closed_with_1008(
    secure_cluster: Cluster, clients: Open
) -> None:
    r = room()
    flooder = await clients(with_token(secure_cluster.edges[0].url, token("abuser")))
    calm = await clients(with_token(secure_cluster.edges[0].url, token("neighbour")))
    await flooder.join(r)
    await calm.join(r)
    first_refusal: float | None = None
    done = asyncio.Event()

    async def flood() -> None:
        n = 0
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while not done.is_set() and not flooder.ws.closed:
                await flooder.chat(f"flood {n}", r)
                n += 1
                await asyncio.sleep(FLOOD_PACE)

    async def watch() -> Closed:
        nonlocal first_refusal
        try:
            while True:
                frame = await flooder.recv(timeout=20)
                if frame["type"] == "error":
                    assert frame["payload"]["code"] == "rate_limited", frame
                    if first_refusal is None:
                        first_refusal = time.monotonic()
        except Closed as closed:
            return closed
        finally:
            done.set()

    async def behave() -> int:
        rounds = 0
        while not done.is_set():
            await calm_round(calm, "neighbour", r, rounds)
            rounds += 1
            await asyncio.sleep(CALM_PACE)
        return rounds

    flooding = asyncio.create_task(flood())
    closed, rounds = await asyncio.wait_for(asyncio.gather(watch(), behave()), 30)
    await flooding
    assert closed.code == 1008
    assert first_refusal is not None
    assert time.monotonic() - first_refusal >= 4.9  # sustained: not at the first refusal
    assert rounds > 10  # the neighbour kept chatting the whole time, never refused
    await calm_round(calm, "neighbour", r, rounds)
    await calm.send({"type": "ping"})
    assert (await calm.recv())["type"] in ("pong", "chat")
