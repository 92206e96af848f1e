"""`chat-client` and `chat-publish` as real processes, driven through pipes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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


Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn_cli() -> AsyncIterator[Spawn]:
    """`await spawn_cli(*args, stdin=..., ...)`: a chat-client process, killed and reaped
    after the test, its stdin pipe closed."""
    procs: list[asyncio.subprocess.Process] = []

    async def spawn(
        *args: str, env: dict[str, str] | None = None, **options: Any
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatclient.cli", *args, cwd=ROOT, env=env_with(env), **options
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


class Terminal:
    """The controlling side of a pseudo-terminal, read on the event loop."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.output = bytearray()
        self.changed = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO once the last process holding the slave side exits
            data = b""
        if not data:
            self.loop.remove_reader(self.master)
        self.output += data
        self.changed.set()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def wait_for(self, pattern: str) -> None:
        async with asyncio.timeout(WAIT):
            while not re.search(pattern, self.output.decode(errors="replace"), re.M):
                self.changed.clear()
                await self.changed.wait()

    def close(self) -> None:
        self.loop.remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    term = Terminal()
    try:
        yield term
    finally:
        term.close()


@pytest.fixture
def input_file(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """`input_file(text)`: an open file holding `text`, closed after the test."""
    opened: list[Any] = []

    def make(text: str) -> Any:
        path = tmp_path / f"input-{len(opened)}.txt"
        path.write_text(text)
        handle = path.open("rb")
        opened.append(handle)
        return handle

    yield make
    for handle in opened:
        handle.close()


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


async def test_quit_on_a_pipe_that_stays_open(
    client_cluster: Cluster, open_client: OpenClient, spawn_cli: Spawn
) -> None:
    # A program that writes lines and /quit but never closes the pipe.
    r = room()
    watcher = await open_client(client_cluster.urls()[0])
    await watcher.join(r)
    proc = await spawn_cli(
        client_cluster.urls()[1], "--room", r, "--name", "bob",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(b"one\ntwo\n/quit\nnever sent\n")
    await proc.stdin.drain()
    async with asyncio.timeout(WAIT):
        out, err = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
        code = await proc.wait()
    assert code == 0, err.decode()
    assert b"Fatal Python error" not in err
    assert re.search(rf"\[{r}\] bob: two$", out.decode(), re.M)
    assert "never sent" not in out.decode()
    async with asyncio.timeout(WAIT):
        assert [(await watcher.receive()).message for _ in range(2)] == ["one", "two"]


async def test_quit_in_a_terminal(
    client_cluster: Cluster, open_client: OpenClient, spawn_cli: Spawn, terminal: Terminal
) -> None:
    r = room()
    watcher = await open_client(client_cluster.urls()[2])
    await watcher.join(r)
    proc = await spawn_cli(
        client_cluster.urls()[0], "--room", r, "--name", "bob",
        stdin=terminal.slave, stdout=terminal.slave, stderr=terminal.slave,
        start_new_session=True,
    )
    await terminal.wait_for(rf"joined {r}")
    terminal.type("hello from a tty\n")
    await terminal.wait_for(rf"\[{r}\] bob: hello from a tty")
    await watcher.send(r, "hi bob")
    await terminal.wait_for(rf"\[{r}\] {watcher.connection_id}: hi bob")
    terminal.type("/quit\n")
    async with asyncio.timeout(WAIT):
        code = await proc.wait()
    assert code == 0, terminal.output.decode(errors="replace")
    assert "Fatal Python error" not in terminal.output.decode(errors="replace")
    assert os.isatty(terminal.master)  # the terminal itself stays usable


@pytest.mark.parametrize("source", ["file", "devnull"])
async def test_input_from_a_file_or_dev_null(
    client_cluster: Cluster,
    open_client: OpenClient,
    spawn_cli: Spawn,
    input_file: Callable[[str], Any],
    source: str,
) -> None:
    # Neither can be watched by the event loop; both are read directly.
    r = room()
    watcher = await open_client(client_cluster.urls()[0])
    await watcher.join(r)
    stdin = input_file("from a file\nlast line, no newline") if source == "file" else (
        asyncio.subprocess.DEVNULL
    )
    proc = await spawn_cli(
        client_cluster.urls()[1], "--room", r,
        stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    if source == "file":
        async with asyncio.timeout(WAIT):
            got = [(await watcher.receive()).message for _ in range(2)]
        assert got == ["from a file", "last line, no newline"]
    else:
        assert out == b""


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_history_is_shown_on_join(
    client_cluster: Cluster, open_client: OpenClient, spawn_cli: Spawn, how: str
) -> None:
    r = room()
    sender = await open_client(client_cluster.urls()[0])
    await sender.join(r)
    for i in range(6):
        await sender.send(r, f"earlier {i}")
    args, env = (["--history", "4"], None) if how == "flag" else ([], {"CHAT_HISTORY": "4"})
    proc = await spawn_cli(
        client_cluster.urls()[1], "--room", r, *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    shown = re.findall(rf"\[{r}\] \S+: (.*)$", out.decode(), re.M)
    assert shown == [f"earlier {i}" for i in range(2, 6)]


async def test_a_resync_and_a_failed_recovery_are_reported(
    fresh_cluster: Callable[..., Cluster], open_client: OpenClient, spawn_cli: Spawn
) -> None:
    cluster = fresh_cluster(edges=2)
    first, second = cluster.edges
    assert cluster.broker is not None
    r = room()
    proc = await spawn_cli(
        first.url, second.url, "--room", r,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stderr
    await read_until(proc.stderr, rf"joined {r}")
    # A broker restart without durable history: the stream restarts, in a new epoch.
    cluster.broker.kill9()
    cluster.start_broker()
    await read_until(proc.stderr, rf"{r} restarted its stream: some messages may be missing")
    # The broker forgets the room again, and then its edge dies: the rejoin elsewhere
    # asks for a position in an epoch that is gone.
    cluster.broker.kill9()
    first.proc.kill9()
    cluster.start_broker()
    await asyncio.to_thread(second.wait_healthy)
    await read_until(
        proc.stderr, rf"rejoined {r} but could not recover .*: some messages may be missing"
    )
    watcher = await open_client(second.url)
    await watcher.join(r)
    proc.stdin.write(b"still here\n")
    proc.stdin.close()
    async with asyncio.timeout(WAIT):
        assert (await watcher.receive()).message == "still here"
        await proc.wait()
    assert proc.returncode == 0


async def test_identity_who_and_presence_lines_in_a_terminal(
    client_cluster: Cluster, open_client: OpenClient, spawn_cli: Spawn, terminal: Terminal
) -> None:
    r = room("who")
    proc = await spawn_cli(
        client_cluster.urls()[0], "--room", r, "--user", "alice", "--name", "Alice A.",
        stdin=terminal.slave, stdout=terminal.slave, stderr=terminal.slave,
        start_new_session=True,
    )
    await terminal.wait_for(rf"joined {r}")
    bob = await open_client(client_cluster.urls()[1], user="bob", name="Bob")
    await bob.join(r)
    await terminal.wait_for(rf"^\d\d:\d\d:\d\d \[{r}\] \* Bob joined\r?$")
    await bob.send(r, "hi alice")
    await terminal.wait_for(rf"^\d\d:\d\d:\d\d \[{r}\] Bob: hi alice\r?$")

    terminal.type("/who\n")
    await terminal.wait_for(
        rf"^\* in {r}: 2 users\r?\n\*   Alice A\. \(alice\): 1 connection\r?\n"
        rf"\*   Bob \(bob\): 1 connection\r?$"
    )
    terminal.type("hello bob\n")
    async with asyncio.timeout(WAIT):
        got = await bob.receive()
        while got.message != "hello bob":
            got = await bob.receive()
    assert (got.sender, got.name) == ("alice", "Alice A.")  # sent as the connection's identity
    await terminal.wait_for(rf"\[{r}\] Alice A\.: hello bob")

    await bob.leave(r)
    await terminal.wait_for(rf"^\d\d:\d\d:\d\d \[{r}\] \* Bob left\r?$")
    terminal.type("/who\n")
    await terminal.wait_for(rf"^\* in {r}: 1 user\r?$")

    # A room above the events limit (crowd-*: 1 member here) says so under /who.
    crowd = room("crowd")
    terminal.type(f"/join {crowd}\n")
    await terminal.wait_for(rf"joined {crowd}")
    await bob.join(crowd)
    async with asyncio.timeout(WAIT):
        while len(await bob.presence(crowd)) < 2:  # until the room's owner lists both
            pass
    terminal.type(f"/who {crowd}\n")
    await terminal.wait_for(
        rf"^\* in {crowd}: 2 users\r?\n\*   Alice A\. \(alice\): 1 connection\r?\n"
        rf"\*   Bob \(bob\): 1 connection\r?\n"
        rf"\* {crowd} is too big for join and leave lines: /who {crowd} lists who is there "
        rf"now\r?$"
    )
    terminal.type("/quit\n")
    async with asyncio.timeout(WAIT):
        code = await proc.wait()
    assert code == 0, terminal.output.decode(errors="replace")
