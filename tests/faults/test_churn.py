"""Thousands of connect/join/leave/disconnect cycles leave nothing behind."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import aiohttp

from tests.support.procs import Cluster, wait_until

CYCLES = 5000
WORKERS = 25
ROOMS = 40
RSS_GROWTH_BOUND = 24 * 1024 * 1024


async def cycle(session: aiohttp.ClientSession, url: str, n: int, rng: random.Random) -> None:
    ws = await session.ws_connect(url)
    room = f"churn-{rng.randrange(ROOMS)}"
    await ws.send_str(f'{{"type":"join","payload":{{"roomId":"{room}"}}}}')
    while (await ws.receive_json(timeout=10))["type"] != "joined":
        pass
    style = n % 3
    if style == 0:  # polite: leave, then close
        await ws.send_str(f'{{"type":"leave","payload":{{"roomId":"{room}"}}}}')
        while (await ws.receive_json(timeout=10))["type"] != "left":
            pass
        await ws.close()
    elif style == 1:  # close without leaving
        await ws.close()
    else:  # vanish: TCP reset, no close frame
        ws._response.connection.transport.abort()  # type: ignore[union-attr]
        ws._response.close()


async def run_cycles(url: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(w: int) -> None:
            for n in range(w, count, WORKERS):
                await cycle(session, url, n, rng)

        await asyncio.gather(*(worker(w) for w in range(WORKERS)))


def settled(cluster: Cluster) -> bool:
    m = cluster.edges[0].metrics()
    return (m["chat_connections"], m["chat_rooms"], m["chat_subscriptions"]) == (0, 0, 0)


async def test_churn_leaves_no_connections_rooms_or_subscriptions(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(edges=1)
    edge = cluster.edges[0]
    await run_cycles(edge.url, 500, seed=1)  # warm up allocators and caches
    wait_until(lambda: settled(cluster), 20, "warm-up settled")
    baseline = edge.rss()
    await run_cycles(edge.url, CYCLES, seed=2)
    wait_until(lambda: settled(cluster), 30, "zero connections, rooms, subscriptions")
    after = edge.rss()
    print(f"\nedge RSS: {baseline / 2**20:.1f} MiB after warm-up, "
          f"{after / 2**20:.1f} MiB after {CYCLES} cycles")
    assert after - baseline < RSS_GROWTH_BOUND
    m = edge.metrics()
    assert m["chat_connections_opened_total"] == 500 + CYCLES
    reasons = {k: v for k, v in m.items() if k.startswith("chat_disconnects_total")}
    assert sum(reasons.values()) == 500 + CYCLES
