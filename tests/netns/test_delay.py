"""Delay between hosts made by relays (bench/delayrelay.py), where the kernel has no netem.

Every edge<->shard and client<->edge connection crosses one relay that holds
each byte D late each way, so a chat from a client on one edge to a client on
the other crosses the delay four times, and a join (the probe to the shard
and back, between the client's own two crossings) four times too.
Root only; skipped, saying why, where namespaces are refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.test_hosts import health, hosts_or_skip, room_on, until
from tests.support.wsclient import WsClient

DELAY = 0.020  # seconds each way, at each relay
BURST = 20


@pytest.fixture
def delayed(tmp_path: Path) -> Iterator[Any]:
    yield from hosts_or_skip(tmp_path, "rd", delay_ms=DELAY * 1000, delay_via="relay")


def test_relays_delay_chats_across_hosts_and_keep_their_order(delayed: Any) -> None:
    assert delayed.delay_via == "relay"
    delayed.hosts.call_in("cl", lambda: asyncio.run(_scenario(delayed)))


async def _scenario(cluster: Any) -> None:
    for url in (cluster.edge_http(0), cluster.edge_http(1)):
        await until(lambda url=url: health(url).get("shardsUp") == 2, 20, f"{url} sees 2 shards")
    rooms = [room_on(0, "slow"), room_on(1, "slow")]
    a = await WsClient.connect(cluster.edge_url(0))
    b = await WsClient.connect(cluster.edge_url(1))
    try:
        for room in rooms:
            await a.join(room)
            began = time.monotonic()
            await b.join(room)
            joined = time.monotonic() - began
            assert joined >= 4 * DELAY, f"a join took {joined * 1000:.1f} ms"
        # One chat at a time: client -> edge 0 -> shard -> edge 1 -> client, four relays.
        for room in rooms:
            for i in range(3):
                began = time.monotonic()
                await a.chat(f"one {i}", room)
                got = await b.recv_chat()
                took = time.monotonic() - began
                assert got["message"] == f"one {i}"
                assert took >= 4 * DELAY, f"a chat crossed in {took * 1000:.1f} ms"
        # Bursts in both shards' rooms at once: each room's chats in order, no hole.
        for i in range(BURST):
            for room in rooms:
                await a.chat(f"burst {i}", room)
        burst = [await b.recv_chat() for _ in range(BURST * len(rooms))]
        for room in rooms:
            mine = [(c["message"], c["offset"]) for c in burst if c["roomId"] == room]
            assert mine == [(f"burst {i}", 4 + i) for i in range(BURST)]
    finally:
        await a.close()
        await b.close()
