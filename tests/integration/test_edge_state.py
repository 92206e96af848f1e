"""What an edge keeps, seen through /metrics and /healthz of real processes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from tests.support.procs import Cluster, Edge, http_get, thread_names, wait_until
from tests.support.wsclient import WsClient

Open = Callable[..., Any]


def gauge(edge: Edge, name: str) -> float:
    return edge.metrics()[name]


async def test_healthz_reports_serving_and_broker(shared_cluster: Cluster) -> None:
    edge = shared_cluster.edges[0]
    status, body = http_get(edge.http + "/healthz")
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["broker"]["lastProbeRoundTripMs"] > 0


async def test_edges_and_broker_speak_zmtp_themselves(shared_cluster: Cluster) -> None:
    # Plain links are spoken on the processes' event loops (edge.zmtpbus,
    # broker.zmtphub): no libzmq I/O thread anywhere. The broker runs its
    # loop on the main thread, beside only its store's checkpointer.
    broker = shared_cluster.broker
    assert broker is not None
    assert not [n for n in thread_names(broker.pid) if n.startswith("ZMQbg")]
    for edge in shared_cluster.edges:
        assert edge.health()[0] == 200
        assert not [n for n in thread_names(edge.proc.pid) if n.startswith("ZMQbg")]


async def test_metrics_exposes_documented_series(
    shared_cluster: Cluster, clients: Open
) -> None:
    edge = shared_cluster.edges[1]
    before = edge.metrics()
    c: WsClient = await clients(edge.url)
    room = "m-" + uuid.uuid4().hex
    await c.join(room)
    await c.chat("counted", room)
    await c.recv_chat()
    await c.send("garbage")
    await c.expect_error("bad_json")
    after = edge.metrics()
    assert after["chat_broker_link_dropped_total"] == 0
    for name in ("chat_connections", "chat_rooms", "chat_subscriptions"):
        assert name in after
    assert after["chat_messages_in_total"] == before.get("chat_messages_in_total", 0) + 1
    assert after["chat_messages_out_total"] >= before.get("chat_messages_out_total", 0) + 1
    key = 'chat_errors_total{code="bad_json"}'
    assert after[key] == before.get(key, 0) + 1
    assert after["chat_connections"] >= 1


async def test_last_member_leaving_unsubscribes(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(edges=1)
    edge = cluster.edges[0]
    a, b = await WsClient.connect(edge.url), await WsClient.connect(edge.url)
    try:
        await a.join("one")
        await b.join("one")
        await a.join("two")
        m = edge.metrics()
        assert (m["chat_rooms"], m["chat_subscriptions"], m["chat_connections"]) == (2, 2, 2)
        await a.leave("one")
        assert gauge(edge, "chat_subscriptions") == 2  # b is still in "one"
        await b.leave("one")
        assert gauge(edge, "chat_subscriptions") == 1
        await a.leave("two")
        assert gauge(edge, "chat_subscriptions") == 0
    finally:
        await a.close()
        await b.close()


async def test_abrupt_disconnect_cleans_up(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(edges=2)
    edge, other = cluster.edges
    victims = [await WsClient.connect(edge.url) for _ in range(5)]
    for i, v in enumerate(victims):
        await v.join(f"abrupt-{i % 2}")
    assert gauge(edge, "chat_connections") == 5
    for v in victims:
        # Drop the TCP connection without a close frame.
        transport = v.ws._response.connection.transport  # type: ignore[union-attr]
        transport.abort()
        await v.session.close()
    wait_until(lambda: gauge(edge, "chat_connections") == 0, 10, "connections gone")
    m = edge.metrics()
    assert (m["chat_rooms"], m["chat_subscriptions"]) == (0, 0)
    assert m['chat_disconnects_total{reason="abrupt"}'] == 5
    # The room still works for members elsewhere.
    survivor = await WsClient.connect(other.url)
    try:
        await survivor.join("abrupt-0")
        await survivor.chat("still here", "abrupt-0")
        assert (await survivor.recv_chat())["message"] == "still here"
    finally:
        await survivor.close()
