"""`chat-client` and `chat-publish` as real processes, driven through pipes."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid

from tests.clients.conftest import OpenClient
from tests.support.procs import ROOT, Cluster, env_with

WAIT = 10.0


def room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def read_until(stream: asyncio.StreamReader, pattern: str) -> str:
    """Lines from `stream` up to and including the first one matching `pattern`."""
    seen: list[str] = []
    async with asyncio.timeout(WAIT):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"stream ended before {pattern!r}; got {seen}")
            seen.append(line)
            if re.search(pattern, line):
                return "".join(seen)


async def test_terminal_client_through_a_pipe(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r, r2 = room("lobby"), room("other")
    urls = client_cluster.urls()
    bob = await open_client(urls[1])
    await bob.join(r)
    carol = await open_client(urls[2])
    await carol.join(r2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatclient.cli", urls[0], "--room", r, "--name", "alice",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env_with(),
    )
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        await read_until(proc.stderr, rf"joined {r}")
        await bob.send(r, "hi alice")
        received = await read_until(proc.stdout, "hi alice")
        assert re.search(rf"^\d\d:\d\d:\d\d \[{r}\] {bob.connection_id}: hi alice$", received, re.M)

        proc.stdin.write(
            f"hello bob\n/join {r2}\nhello carol\n/rooms\n//slash\n".encode()
        )
        await proc.stdin.drain()
        proc.stdin.close()
        async with asyncio.timeout(WAIT):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    text = out.decode()
    assert re.search(rf"\[{r}\] alice: hello bob$", text, re.M)
    assert re.search(rf"\[{r2}\] alice: hello carol$", text, re.M)
    assert re.search(rf"\[{r2}\] alice: /slash$", text, re.M)
    assert f"rooms: {r}, {r2} (current)" in err.decode()  # sorted; lobby-* < other-*
    async with asyncio.timeout(WAIT):
        assert (await bob.receive()).message == "hi alice"  # his own, first
        assert (await bob.receive()).message == "hello bob"
        assert (await carol.receive()).message == "hello carol"
        assert (await carol.receive()).message == "/slash"


async def test_quit_stops_reading(client_cluster: Cluster, open_client: OpenClient) -> None:
    r = room()
    watcher = await open_client(client_cluster.urls()[2])
    await watcher.join(r)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatclient.cli", client_cluster.urls()[1], "--room", r,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env_with(),
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate(b"first\n/quit\nnever sent\n")
    assert proc.returncode == 0, err.decode()
    assert "first" in out.decode() and "never sent" not in out.decode()
    async with asyncio.timeout(WAIT):
        assert (await watcher.receive()).message == "first"
    await watcher.send(r, "after")
    async with asyncio.timeout(WAIT):
        assert (await watcher.receive()).message == "after"  # nothing else came in between


async def test_chat_publish_reaches_every_edge(
    client_cluster: Cluster, open_client: OpenClient
) -> None:
    r = room("news")
    members = [await open_client(url) for url in client_cluster.urls()]
    for m in members:
        await m.join(r)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatclient.publish_cli", "--room", r, "--from", "deploy-bot",
        "release 1.2 is out",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env=env_with({
            "CHAT_BROKER_PUB": client_cluster.broker_pub,
            "CHAT_BROKER_SUB": client_cluster.broker_sub,
        }),
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    message_id = out.decode().strip()
    async with asyncio.timeout(WAIT):
        got = [await m.receive() for m in members]
    assert {(g.id, g.sender, g.message) for g in got} == {
        (message_id, "deploy-bot", "release 1.2 is out")
    }


async def test_chat_publish_fails_without_a_broker() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatclient.publish_cli", "--room", "r", "--timeout", "0.3", "x",
        "--broker-pub", "tcp://127.0.0.1:1", "--broker-sub", "tcp://127.0.0.1:2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env_with(),
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate()
    assert proc.returncode == 1 and b"not live" in err and out == b""
