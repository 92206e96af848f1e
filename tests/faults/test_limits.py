"""Heartbeats, frame size cap, connection cap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import OpenWs
from tests.support.procs import Cluster, wait_until


async def test_silent_peer_is_closed_and_cleaned_up(
    cluster_factory: Callable[..., Cluster],
    clients: OpenWs,
    http_sessions: Callable[..., aiohttp.ClientSession],
) -> None:
    cluster = cluster_factory(edges=1, edge_args=["--heartbeat", "0.3"])
    edge = cluster.edges[0]
    # autoping=False: this client never answers the server's pings.
    dead = await http_sessions().ws_connect(edge.url, autoping=False)
    alive = await clients(edge.url)
    await dead.send_str('{"type":"join","payload":{"roomId":"hb"}}')
    assert (await dead.receive_json())["type"] == "joined"
    await alive.join("hb")
    # A reading client answers pings (aiohttp does it inside receive()).
    alive_reads = asyncio.create_task(alive.recv_chat(timeout=30))
    while True:  # pings arrive; the dead one never answers them
        msg = await dead.receive(10)
        if msg.type is not aiohttp.WSMsgType.PING:
            break
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)
    wait_until(
        lambda: edge.metrics().get('chat_disconnects_total{reason="heartbeat"}') == 1,
        10, "heartbeat disconnect counted",
    )
    m = edge.metrics()
    assert m["chat_connections"] == 1  # the live one, which answers pings
    await alive.chat("still alive", "hb")
    assert (await alive_reads)["message"] == "still alive"


async def test_oversized_frame_closes_with_1009(
    shared_cluster: Cluster, http_sessions: Callable[..., aiohttp.ClientSession]
) -> None:
    edge = shared_cluster.edges[0]
    ws = await http_sessions().ws_connect(edge.url)
    await ws.send_str('{"type":"ping","pad":"' + "x" * 70_000 + '"}')
    msg = await ws.receive(10)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1009


async def test_connection_cap_refuses_upgrades_with_503(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=1, edge_args=["--max-connections", "2"])
    edge = cluster.edges[0]
    first, _second = await clients(edge.url), await clients(edge.url)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await clients(edge.url)
    assert info.value.status == 503
    await first.close()
    wait_until(lambda: edge.metrics()["chat_connections"] == 1, 10, "slot freed")
    third = await clients(edge.url)
    await third.close()
