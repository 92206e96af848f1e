"""The broker's store on a bad disk: a corrupt file, a full file system.

A store that cannot be trusted is moved aside (logged at ERROR) and every
room starts a new epoch; a commit that fails for want of space makes the
broker refuse chats (`unavailable` naming each msgId) without dying, and it
takes chats again, where the stream left off, once space is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OpenWs
from tests.support.procs import Cluster, free_port, wait_until
from tests.support.wsclient import WsClient

STORE = "streams.db"


def all_live(cluster: Cluster) -> bool:
    return all(
        e.health()[0] == 200 and e.metrics()["chat_pending_rooms"] == 0 for e in cluster.edges
    )


async def keyed(client: WsClient, room: str, msg_id: str, message: str) -> None:
    await client.send(
        {"type": "chat", "payload": {"roomId": room, "message": message, "msgId": msg_id}}
    )


async def frames(client: WsClient, count: int) -> list[dict[str, Any]]:
    return [await client.recv() for _ in range(count)]


def by_type(got: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f["payload"] for f in got if f["type"] == kind]


def half(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def first_1000(path: Path) -> bytes:
    return path.read_bytes()[:1000]


def random_bytes(path: Path) -> bytes:
    return os.urandom(path.stat().st_size)


@pytest.mark.parametrize("damage", [half, first_1000, random_bytes],
                         ids=["truncated to half", "truncated to 1000 bytes", "random bytes"])
async def test_a_corrupt_store_is_moved_aside_and_rooms_start_new_epochs(
    cluster_factory: Callable[..., Cluster], clients: OpenWs, tmp_path: Path,
    damage: Callable[[Path], bytes],
) -> None:
    data = tmp_path / "data"
    cluster = cluster_factory(edges=2, env={"CHAT_DATA_DIR": str(data)})
    assert cluster.broker is not None
    member = await clients(cluster.edges[0].url)
    epoch = (await member.join("c"))["payload"]["epoch"]
    # Enough history for the file to span many pages.
    for i in range(40):
        await member.chat(f"{i} " + "x" * 2000, "c")
    assert [(await member.recv_chat())["offset"] for _ in range(40)] == list(range(1, 41))
    # A clean stop checkpoints the write-ahead log: the whole store is in one file.
    cluster.broker.stop()
    wait_until(lambda: all(e.health()[0] == 503 for e in cluster.edges), 10, "edges see it")
    path = data / STORE
    assert path.stat().st_size > 64 * 1024
    wrecked = damage(path)
    path.write_bytes(wrecked)

    broker = cluster.start_broker(log=tmp_path / "broker.log")
    wait_until(lambda: all_live(cluster), 15, "edges healthy on the restarted broker")
    assert broker.popen is not None and broker.popen.poll() is None
    log = broker.output()
    print(f"\n{len(wrecked)} bytes of {STORE} left; the broker's log:\n{log}")
    [line] = [x for x in log.splitlines() if "cannot be trusted" in x]
    assert " ERROR broker.store: " in line and "moved aside as streams.db.corrupt-" in line
    [aside] = data.glob(f"{STORE}.corrupt-*")
    assert aside.name in line
    assert aside.read_bytes() == wrecked  # moved as it was, nothing lost for a post-mortem
    assert "0 rooms, 0 chats of history" in log

    # The member is told its room's stream started again, before any later chat.
    await member.chat("after", "c")
    resync = (await member.recv_type("resync"))["payload"]
    assert resync["roomId"] == "c" and resync["epoch"] != epoch and resync["offset"] == 0
    after = await member.recv_chat()
    assert (after["message"], after["epoch"], after["offset"]) == ("after", resync["epoch"], 1)
    # A newcomer on another edge joins the new stream.
    newcomer = await clients(cluster.edges[1].url)
    joined = (await newcomer.join("c"))["payload"]
    assert (joined["epoch"], joined["offset"]) == (resync["epoch"], 1)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `path`, unmounted afterwards; skips the test if it cannot."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is a small tmpfs, and mounting one needs root")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> int:
    """Write zeros to `path` until the file system has no byte left; bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    written = 0
    try:
        for chunk in (1 << 16, 4096, 1):
            block = bytes(chunk)
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


async def test_a_full_disk_refuses_chats_until_space_returns(tmp_path: Path) -> None:
    # Room for the store's file and its commit log (4 MiB segments, reserved).
    with tmpfs(tmp_path / "disk", "16m") as disk:
        cluster = Cluster(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}",
                          # As fast as acks come back: no per-connection rate limit.
                          {"CHAT_DATA_DIR": str(disk / "data"), "CHAT_RATE_LIMIT": "0"})
        opened: list[WsClient] = []
        log = tmp_path / "broker.log"
        try:
            cluster.start_broker(log=log)
            for _ in range(2):
                cluster.start_edge()
            wait_until(lambda: all_live(cluster), 15, "edges healthy")
            for edge in cluster.edges:
                opened.append(await WsClient.connect(edge.url))
            await _full_disk(cluster, opened[0], opened[1], disk)
        finally:
            # Clients first (an edge's shutdown waits for their close handshake),
            # then the processes, before the unmount: the broker holds the store open.
            for client in opened:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 2)
            cluster.stop()
            print(f"\nthe broker's log:\n{log.read_text()}")


async def _full_disk(cluster: Cluster, sender: WsClient, listener: WsClient, disk: Path) -> None:
    broker = cluster.broker
    assert broker is not None and broker.popen is not None
    pid = broker.pid
    epoch = (await sender.join("full"))["payload"]["epoch"]
    await listener.join("full")
    for i in range(3):
        await keyed(sender, "full", f"ok-{i}", f"ok {i}")
    got = await frames(sender, 6)  # 3 acks and 3 chats, in any order
    assert sorted((a["msgId"], a["offset"]) for a in by_type(got, "ack")) == [
        ("ok-0", 1), ("ok-1", 2), ("ok-2", 3)
    ]
    assert [(c["msgId"], c["offset"]) for c in await frames_of(listener, 3)] == [
        ("ok-0", 1), ("ok-1", 2), ("ok-2", 3)
    ]

    filler = disk / "filler"
    filled = fill(filler)
    # The commit log has its space reserved, and the store finds the file
    # full at its next write to it (within a fraction of a second): until
    # then chats are stored (acked, delivered); then they are refused
    # (`unavailable`, delivered nowhere), until three have been refused.
    refused: list[str] = []
    stored: list[str] = []
    echoes: list[str] = []  # the sender's own copies, as they come
    for i in range(5000):
        msg_id = f"try-{i}"
        await keyed(sender, "full", msg_id, msg_id)
        while True:
            frame = await sender.recv()
            payload = frame["payload"]
            if frame["type"] == "chat":
                echoes.append(payload["msgId"])
            elif frame["type"] in ("ack", "error") and payload.get("msgId") == msg_id:
                break
        if frame["type"] == "ack":
            assert payload["offset"] == 4 + len(stored)
            stored.append(msg_id)
            continue
        assert payload["code"] == "unavailable", frame
        refused.append(msg_id)
        if len(refused) == 3:
            break
    assert len(refused) == 3, "the disk never filled"
    # The sender's own copies of what was stored, and nothing else.
    echoes += [c["msgId"] for c in await frames_of(sender, len(stored) - len(echoes))]
    assert echoes == stored
    # Still the same broker, and the path is still healthy.
    assert broker.popen.poll() is None and broker.pid == pid
    assert all(e.health()[0] == 200 for e in cluster.edges)
    assert "store write failed" in broker.output()

    # Killed while the disk is full, with turns in its commit log that the
    # file could not take: it starts all the same (the log applied in a
    # transaction it rolls back), keeps every stored chat under the same
    # epoch, and refuses until there is space.
    broker.kill9()
    broker = cluster.start_broker(log=broker.log)
    pid = broker.pid
    wait_until(lambda: all_live(cluster), 15, "edges back on the restarted broker")
    await keyed(sender, "full", "while-full", "while full")
    frame = await sender.recv()
    assert frame["type"] == "error" and frame["payload"]["code"] == "unavailable", frame
    assert frame["payload"]["msgId"] == "while-full"
    refused.append("while-full")
    assert broker.popen is not None and broker.popen.poll() is None
    assert "store write failed" in broker.output()

    filler.unlink()
    freed = time.monotonic()
    wait_until(lambda: "store writable again" in broker.output(), 10, "the broker writes again")
    resumed = time.monotonic() - freed
    # The refused chats, sent again with their msgIds, are new to the broker:
    # acked (not as duplicates) at the next offsets, and delivered there once.
    first = 4 + len(stored)
    again = [*refused, "after"]
    for msg_id in again:
        await keyed(sender, "full", msg_id, msg_id)
    got = await frames(sender, 2 * len(again))
    acks = sorted((a["msgId"], a["epoch"], a["offset"], a.get("duplicate", False))
                  for a in by_type(got, "ack"))
    assert acks == sorted((m, epoch, first + i, False) for i, m in enumerate(again))
    # The listener's stream goes on where the stored ones ended: nothing
    # refused was delivered before.
    expected = [*stored, *again]
    assert [(c["msgId"], c["epoch"], c["offset"])
            for c in await frames_of(listener, len(expected))] == [
        (m, epoch, 4 + i) for i, m in enumerate(expected)
    ]
    assert broker.pid == pid
    print(f"\nfull disk: {filled} bytes of filler; {len(stored)} chats still stored, "
          f"{len(refused)} refused with "
          f"unavailable; chats taken again {resumed:.2f} s after the filler was removed")


async def frames_of(client: WsClient, count: int) -> list[dict[str, Any]]:
    """The next `count` frames, which must all be chats."""
    got = await frames(client, count)
    assert [f["type"] for f in got] == ["chat"] * count, got
    return [f["payload"] for f in got]
