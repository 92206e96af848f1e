"""A client that stops reading is cut off at its outbox; nobody else notices."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import OpenWs
from tests.support.procs import Cluster, wait_until
from tests.support.rawws import RawWs
from tests.support.wsclient import WsClient

MESSAGES = 10_000
TEXT = "s" * 2000  # 10k messages ~ 20 MB: far beyond socket buffers plus a 1 MiB outbox
RSS_GROWTH_BOUND = 64 * 1024 * 1024


async def test_slow_reader_is_dropped_with_1013_and_others_get_everything(
    cluster_factory: Callable[..., Cluster], clients: OpenWs, raw_clients: Callable[..., RawWs]
) -> None:
    cluster = cluster_factory(edges=2, env={"CHAT_RATE_LIMIT": "0"})
    edge, other = cluster.edges
    slow = raw_clients(edge.port, rcvbuf=65536)
    slow.send_json({"type": "join", "payload": {"roomId": "firehose"}})
    assert slow.read_json()["type"] == "joined"
    neighbour = await clients(edge.url)  # same edge as the slow one
    remote = await clients(other.url)
    sender = await clients(other.url)
    for c in (neighbour, remote, sender):
        await c.join("firehose")
    rss_before = edge.rss()

    members = (neighbour, remote, sender)
    progress = [0] * len(members)
    advanced = asyncio.Event()

    async def read_all(k: int, c: WsClient) -> list[int]:
        got = []
        for _ in range(MESSAGES):
            got.append(int((await c.recv_chat())["message"][:5]))
            progress[k] += 1
            advanced.set()
        return got

    readers = [asyncio.create_task(read_all(k, c)) for k, c in enumerate(members)]

    def slow_disconnect_counted() -> bool:
        return edge.metrics().get('chat_disconnects_total{reason="slow"}') == 1

    def wait_then_read() -> tuple[int | None, str, int]:
        # Once the edge has given up on it, the slow client finally reads: what
        # was queued, then the close frame (it has CLOSE_GRACE seconds to do so).
        wait_until(slow_disconnect_counted, 60, "slow disconnect counted")
        return slow.read_until_close()

    slow_outcome = asyncio.create_task(asyncio.to_thread(wait_then_read))
    # Well-behaved members read as fast as the test can feed them; keep the
    # sender at most WINDOW messages ahead so that only the silent one lags.
    window = 100
    for i in range(MESSAGES):
        while i - min(progress) >= window:
            advanced.clear()
            await advanced.wait()
        await sender.chat(f"{i:05d}{TEXT}", "firehose")
    for got in await asyncio.gather(*readers):
        assert got == list(range(MESSAGES))  # every message, in order

    rss_after = edge.rss()
    code, reason, seen = await slow_outcome
    slow.close()
    assert code == 1013 and "slow" in reason
    assert 0 < seen < MESSAGES
    m = edge.metrics()
    assert m["chat_connections"] == 1  # the neighbour; the slow one is gone
    assert rss_after - rss_before < RSS_GROWTH_BOUND, (rss_before, rss_after)
