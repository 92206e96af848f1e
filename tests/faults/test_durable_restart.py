"""kill -9 of a broker with a store: the rooms' streams come back as they were."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import OpenWs
from tests.support.procs import Cluster, wait_until


async def test_a_restarted_broker_keeps_epochs_and_offsets(
    cluster_factory: Callable[..., Cluster], clients: OpenWs, tmp_path: Path
) -> None:
    cluster = cluster_factory(edges=1, env={"CHAT_DATA_DIR": str(tmp_path / "data")})
    edge = cluster.edges[0]
    assert cluster.broker is not None
    sender = await clients(edge.url)
    joined = await sender.join("d")
    epoch = joined["payload"]["epoch"]
    for i in range(5):
        await sender.chat(f"before {i}", "d")
    for i in range(5):
        got = await sender.recv_chat()
        assert (got["message"], got["epoch"], got["offset"]) == (f"before {i}", epoch, i + 1)
    cluster.broker.kill9()
    wait_until(lambda: edge.health()[0] == 503, 10, "healthz 503 with the broker gone")
    cluster.start_broker()
    wait_until(lambda: edge.health()[0] == 200, 10, "healthz 200 with the broker back")
    wait_until(lambda: edge.metrics()["chat_pending_rooms"] == 0, 10, "room re-verified")
    await sender.chat("after", "d")
    # Same epoch, the next offset, and no resync in between.
    frame = await sender.recv(timeout=10)
    assert frame["type"] == "chat", frame
    assert (frame["payload"]["epoch"], frame["payload"]["offset"]) == (epoch, 6)
    # A newcomer on the restarted broker gets the history from before the kill.
    late = await clients(edge.url)
    await late.send({"type": "join", "payload": {"roomId": "d", "history": 10}})
    replay = [await late.recv(timeout=10) for _ in range(7)]
    assert replay[0]["type"] == "joined"
    assert [f["payload"]["message"] for f in replay[1:]] == [
        *(f"before {i}" for i in range(5)), "after"
    ]
