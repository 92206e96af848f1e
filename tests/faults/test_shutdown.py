"""SIGTERM: in-flight messages delivered, every client closed with 1001, exit 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from tests.conftest import OpenWs
from tests.support.procs import Cluster
from tests.support.wsclient import Closed, WsClient

MESSAGES = 300


async def test_sigterm_flushes_then_closes_with_1001(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=2, env={"CHAT_RATE_LIMIT": "0"})
    leaving, staying = cluster.edges
    members = [await clients(leaving.url) for _ in range(20)]
    sender = await clients(staying.url)
    for c in [*members, sender]:
        await c.join("last words")
    for i in range(MESSAGES):
        await sender.chat(f"m{i}", "last words")
    for i in range(MESSAGES):  # the sender's own copies: all passed the broker
        assert (await sender.recv_chat())["message"] == f"m{i}"
    leaving.proc.signal(signal.SIGTERM)

    async def drain(c: WsClient) -> tuple[int, int | None]:
        got = 0
        try:
            while True:
                await c.recv_chat()
                got += 1
        except Closed as closed:
            return got, closed.code

    results = await asyncio.gather(*(drain(c) for c in members))
    assert results == [(MESSAGES, 1001)] * len(members)
    assert await asyncio.to_thread(leaving.proc.wait, 15) == 0


async def test_broker_exits_zero_on_sigterm(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(edges=1)
    assert cluster.broker is not None
    cluster.broker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster.broker.wait, 10) == 0
