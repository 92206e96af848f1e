"""The Origin allowlist and the per-IP connection cap, at the upgrade."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.security.conftest import token, upgrade_status, with_token
from tests.support.procs import Cluster

Open = Callable[..., Any]


async def test_allowed_origins(secure_cluster: Cluster) -> None:
    url = with_token(secure_cluster.edges[0].url, token("gina"))
    assert await upgrade_status(url, origin="https://chat.example") == 101
    assert await upgrade_status(url, origin="http://localhost:3000") == 101
    assert await upgrade_status(url, origin="https://evil.example") == 403
    assert await upgrade_status(url, origin="https://chat.example.evil.example") == 403
    assert await upgrade_status(url, origin="null") == 403
    assert await upgrade_status(url) == 101  # no Origin: a non-browser client


async def test_origin_is_checked_before_the_token(secure_cluster: Cluster) -> None:
    assert await upgrade_status(secure_cluster.edges[0].url, origin="https://evil.example") == 403


async def test_require_origin(secure_cluster: Cluster) -> None:
    edge = secure_cluster.start_edge(args=["--require-origin"])
    edge.wait_healthy()
    url = with_token(edge.url, token("hank"))
    assert await upgrade_status(url) == 403
    assert await upgrade_status(url, origin="https://chat.example") == 101


async def test_per_ip_cap(cluster_factory: Callable[..., Cluster], clients: Open) -> None:
    cluster = cluster_factory(edges=1, edge_args=["--max-conns-per-ip", "3"])
    url = cluster.edges[0].url
    held = [await clients(url) for _ in range(3)]
    assert await upgrade_status(url) == 429
    await held.pop().close()
    # The slot comes back once the edge has seen the close; retry until it has.
    for _ in range(200):
        status = await upgrade_status(url)
        if status == 101:
            break
        assert status == 429
    assert status == 101
    await held[0].send({"type": "ping"})
    await held[0].recv_type("pong")

