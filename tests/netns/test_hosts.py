"""Broker shards and edges on different hosts (network namespaces), CURVE between them.

Builds its own namespaces with veth pairs on 10.250.0.0/24 (scripts/netns_cluster.py)
and always deletes them. Skipped only where namespaces are refused (not root).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from protocol.shards import shard_of
from tests.support.wsclient import WsClient

ROOT = Path(__file__).resolve().parents[2]
PROBE_TIMEOUT = 1.5


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("netns_cluster",
                                                  ROOT / "scripts" / "netns_cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["netns_cluster"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


netns = _load()


def room_on(shard: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(1000) if shard_of(f"{prefix}-{i}", 2) == shard)


def health(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    return body


async def until(check: Any, timeout: float, what: str) -> float:
    """Poll `check` (in this host's namespace) until true; return how long it took."""
    start = time.monotonic()
    while True:
        try:
            if await asyncio.to_thread(check):
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def hosts_or_skip(tmp_path: Path, prefix: str, **options: Any) -> Iterator[Any]:
    """Two shards and two edges on hosts of their own; skip where namespaces are refused."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root: run as root to test across hosts")
    try:
        with netns.running(2, 2, prefix=f"{prefix}{os.getpid() % 10000}", work=tmp_path,
                           probe_timeout=PROBE_TIMEOUT, **options) as c:
            yield c
    except netns.NamespacesRefused as exc:
        pytest.skip(f"this machine refuses network namespaces: {exc}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    yield from hosts_or_skip(tmp_path, "rc")


def test_shards_across_hosts(cluster: Any) -> None:
    cluster.hosts.call_in("cl", lambda: asyncio.run(_scenario(cluster)))


async def _scenario(cluster: Any) -> None:
    edges = [cluster.edge_http(i) for i in range(2)]
    for url in edges:
        await until(lambda url=url: health(url).get("shardsUp") == 2, 20, f"{url} sees 2 shards")
    rooms = {0: room_on(0, "net"), 1: room_on(1, "net")}
    a = await WsClient.connect(cluster.edge_url(0))
    b = await WsClient.connect(cluster.edge_url(1))
    try:
        for room in rooms.values():
            await a.join(room)
            await b.join(room)
        # Chats cross hosts, in order, in rooms of both shards.
        for shard, room in rooms.items():
            for i in range(5):
                await a.chat(f"{shard}:{i}", room)
            got = [await b.recv_chat() for _ in range(5)]
            assert [(c["message"], c["offset"]) for c in got] == [
                (f"{shard}:{i}", i + 1) for i in range(5)]
            for _ in range(5):
                await a.recv_chat()
        epoch1 = got[0]["epoch"]
        # Shard 1's host cut off: only its rooms stop, and both edges say so in time.
        cluster.hosts.link("b1", up=False)
        for url in edges:
            took = await until(lambda url=url: health(url)["shards"][1]["status"] == "unavailable",
                               PROBE_TIMEOUT + 2, f"{url} reports shard 1 down")
            # Within --probe-timeout of the cut (plus a tick and a poll, loaded machine).
            assert took <= PROBE_TIMEOUT + 0.5, took
            body = health(url)
            assert body["status"] == "ok" and body["shards"][0]["status"] == "ok"
        for i in range(5, 10):
            await a.chat(f"0:{i}", rooms[0])
        got = [await b.recv_chat(timeout=2) for _ in range(5)]
        assert [c["offset"] for c in got] == list(range(6, 11))
        for _ in range(5):
            await a.recv_chat()
        await a.chat("cut off", rooms[1])
        await a.expect_error("unavailable")
        # Link back: the shard's rooms resume in the same stream; recovery works.
        cluster.hosts.link("b1", up=True)
        for url in edges:
            await until(lambda url=url: health(url).get("shardsUp") == 2, 15,
                        f"{url} sees shard 1 again")
        deadline = time.monotonic() + 10
        while True:
            await a.chat("back", rooms[1])
            frame = await a.recv()
            while frame["type"] == "chat" and frame["payload"]["roomId"] != rooms[1]:
                frame = await a.recv()
            if frame["type"] == "chat":
                break
            assert frame["payload"]["code"] == "unavailable", frame
            assert time.monotonic() < deadline, "shard 1's room did not resume"
            await asyncio.sleep(0.2)
        back = await b.recv_chat()
        while back["roomId"] != rooms[1]:
            back = await b.recv_chat()
        assert (back["message"], back["epoch"], back["offset"]) == ("back", epoch1, 6)
        c = await WsClient.connect(cluster.edge_url(1))
        try:
            await c.send({"type": "join", "payload": {
                "roomId": rooms[1], "since": {"epoch": epoch1, "offset": 3}}})
            joined = await c.recv_type("joined")
            assert joined["payload"]["recovered"] is True
            assert [(await c.recv_chat())["offset"] for _ in range(3)] == [4, 5, 6]
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


def test_teardown_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    prefix = f"rt{os.getpid() % 10000}"
    hosts = netns.Hosts(prefix)
    try:
        hosts.build(["x0", "x1"])
        raise RuntimeError("a failure mid-test")
    except RuntimeError:
        pass
    finally:
        hosts.teardown()
    listed = os.popen("ip netns list").read()
    assert prefix not in listed
