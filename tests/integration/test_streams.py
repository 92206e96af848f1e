"""Sequenced rooms on real processes, at the wire: offsets, history, recovery,
idempotent sends, resync (protocol v2 sections 1 to 6)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import OpenWs
from tests.support.procs import Cluster, running_cluster
from tests.support.wsclient import WsClient


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[Cluster]:
    """Three edges without rate limits: these tests send hundreds of chats at once."""
    with running_cluster(edges=3, env={"CHAT_RATE_LIMIT": "0"}) as cluster:
        yield cluster


def room() -> str:
    return "s-" + uuid.uuid4().hex[:10]


async def join(c: WsClient, room_id: str, **extra: Any) -> dict[str, Any]:
    await c.send({"type": "join", "payload": {"roomId": room_id, **extra}})
    payload: dict[str, Any] = (await c.recv_type("joined"))["payload"]
    return payload


async def chats(c: WsClient, count: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < count:
        frame = await c.recv()
        if frame["type"] == "chat":
            out.append(frame["payload"])
    return out


async def send_all(c: WsClient, room_id: str, texts: list[str]) -> None:
    for text in texts:
        await c.chat(text, room_id)


async def test_offsets_are_the_same_at_every_member_on_every_edge(
    shared_cluster: Cluster, clients: OpenWs
) -> None:
    r = room()
    a, b = await clients(shared_cluster.edges[0].url), await clients(shared_cluster.edges[1].url)
    ja, jb = await join(a, r), await join(b, r)
    assert ja["epoch"] == jb["epoch"] and ja["offset"] == jb["offset"] == 0
    await send_all(a, r, [f"m{i}" for i in range(20)])
    got_a, got_b = await chats(a, 20), await chats(b, 20)
    assert [c["offset"] for c in got_a] == list(range(1, 21))
    assert [(c["offset"], c["message"], c["epoch"]) for c in got_a] == [
        (c["offset"], c["message"], c["epoch"]) for c in got_b
    ]


async def test_history_on_join_then_live(shared_cluster: Cluster, clients: OpenWs) -> None:
    r = room()
    sender = await clients(shared_cluster.edges[0].url)
    await join(sender, r)
    await send_all(sender, r, [f"m{i}" for i in range(30)])
    await chats(sender, 30)
    late = await clients(shared_cluster.edges[1].url)
    joined = await join(late, r, history=10)
    assert joined["offset"] == 30
    await sender.chat("live", r)
    got = await chats(late, 11)
    assert [c["offset"] for c in got] == list(range(21, 32))
    assert got[-1]["message"] == "live"
    # A larger K is clamped to --history-max (100), not refused.
    again = await clients(shared_cluster.edges[2].url)
    await join(again, r, history=10_000)
    assert [c["offset"] for c in await chats(again, 31)] == list(range(1, 32))


async def test_recovery_across_edges_after_a_close_and_after_an_abrupt_drop(
    shared_cluster: Cluster, clients: OpenWs
) -> None:
    r = room()
    edges = shared_cluster.edges
    sender = await clients(edges[1].url)
    await join(sender, r)
    for abrupt in (False, True):
        member = await clients(edges[0].url)
        joined = await join(member, r)
        seen = (joined["epoch"], joined["offset"])
        if abrupt:
            member.ws._response.connection.transport.abort()  # type: ignore[union-attr]
        else:
            await member.close()
        texts = [f"missed-{abrupt}-{i}" for i in range(500)]
        await send_all(sender, r, texts)
        await chats(sender, 500)
        back = await clients(edges[2].url)
        rejoined = await join(back, r, since={"epoch": seen[0], "offset": seen[1]})
        assert rejoined["recovered"] is True
        assert rejoined["offset"] == seen[1] + 500
        await sender.chat("after", r)
        got = await chats(back, 501)
        assert [c["message"] for c in got] == [*texts, "after"]
        assert [c["offset"] for c in got] == list(range(seen[1] + 1, seen[1] + 502))
        await sender.recv_type("chat")  # its own copy of "after"


async def test_recovery_from_an_unknown_position_says_so(
    shared_cluster: Cluster, clients: OpenWs
) -> None:
    r = room()
    c = await clients(shared_cluster.edges[0].url)
    joined = await join(c, r, since={"epoch": "not-this-one", "offset": 3})
    assert joined["recovered"] is False
    bad = await clients(shared_cluster.edges[0].url)
    await bad.send({"type": "join", "payload": {"roomId": r, "history": -1}})
    await bad.expect_error("invalid_payload")
    await bad.send({"type": "join", "payload": {"roomId": r, "since": {"offset": 1}}})
    await bad.expect_error("invalid_payload")


async def test_a_msgid_is_delivered_once_across_edges_and_reconnects(
    shared_cluster: Cluster, clients: OpenWs
) -> None:
    r = room()
    edges = shared_cluster.edges
    listener = await clients(edges[2].url)
    await join(listener, r)
    first = await clients(edges[0].url)
    await join(first, r)
    msg = {"type": "chat", "payload": {"roomId": r, "message": "once", "msgId": "m-" + r}}
    await first.send(msg)
    ack = None
    while ack is None:
        frame = await first.recv()
        if frame["type"] == "ack":
            ack = frame["payload"]
        else:
            assert frame["type"] == "chat" and frame["payload"]["msgId"] == "m-" + r
    assert ack["duplicate"] is False if "duplicate" in ack else True
    await first.close()
    second = await clients(edges[1].url)  # a reconnect elsewhere, the same send again
    await join(second, r)
    await second.send(msg)
    dup = (await second.recv_type("ack"))["payload"]
    assert dup["duplicate"] is True
    assert (dup["epoch"], dup["offset"]) == (ack["epoch"], ack["offset"])
    await second.chat("marker", r)
    got = await chats(listener, 2)
    assert [c["message"] for c in got] == ["once", "marker"]  # "once" exactly once


async def test_a_broker_restart_is_a_resync_and_nothing_hangs(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=2, env={"CHAT_RATE_LIMIT": "0"})
    r = room()
    a, b = await clients(cluster.edges[0].url), await clients(cluster.edges[1].url)
    first = await join(a, r)
    await join(b, r)
    await a.chat("before", r)
    assert (await b.recv_chat())["offset"] == 1
    await a.recv_chat()
    assert cluster.broker is not None
    cluster.broker.kill9()
    cluster.start_broker()
    for edge in cluster.edges:
        edge.wait_healthy()
    frame = await b.recv()
    assert frame["type"] == "resync", frame
    assert frame["payload"]["epoch"] != first["epoch"]
    assert (await a.recv_type("resync"))["payload"] == frame["payload"]
    await a.chat("after", r)
    got = await b.recv_chat()
    assert (got["message"], got["epoch"], got["offset"]) == (
        "after", frame["payload"]["epoch"], frame["payload"]["offset"] + 1
    )
    late = await clients(cluster.edges[0].url)
    rejoined = await join(late, r, since={"epoch": first["epoch"], "offset": 1})
    assert rejoined["recovered"] is False


JOIN_TIMEOUT = 1.0  # seconds: --join-timeout, 5 by default


async def test_a_join_while_the_broker_is_down_is_refused_at_the_join_timeout(
    cluster_factory: Callable[..., Cluster], clients: OpenWs
) -> None:
    cluster = cluster_factory(edges=1, edge_args=["--join-timeout", str(JOIN_TIMEOUT)])
    c = await clients(cluster.edges[0].url)
    assert cluster.broker is not None
    cluster.broker.kill9()
    asked = time.monotonic()
    await c.send({"type": "join", "payload": {"roomId": room()}})
    frame = await c.recv(timeout=10)
    waited = time.monotonic() - asked
    assert frame["type"] == "error" and frame["payload"]["code"] == "unavailable", frame
    assert waited >= JOIN_TIMEOUT * 0.9, waited  # the room had until then to be proven live
    await c.send({"type": "ping"})
    assert (await c.recv())["type"] == "pong"  # the connection stays usable
