"""The delay relay (bench/delayrelay.py) on loopback: real sockets, the delay measured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import bench.delayrelay
from bench.delayline import DelayLine
from bench.delayrelay import Relay, Route
from tests.support.procs import ROOT

DELAY = 0.020
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()  # the EOF passed on


@contextlib.asynccontextmanager
async def relayed(handler: Handler, delay: float = DELAY,
                  limit: int = 1 << 20) -> AsyncIterator[tuple[Relay, tuple[str, int]]]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    relay = Relay([Route(("127.0.0.1", 0), server.sockets[0].getsockname()[:2])], delay, limit)
    await relay.start()
    try:
        yield relay, relay.addresses[0]
    finally:
        await relay.close()
        server.close()


async def test_each_way_is_delayed_and_bytes_keep_their_order() -> None:
    async with relayed(echo) as (relay, address):
        reader, writer = await asyncio.open_connection(*address)
        for i in range(5):
            began = time.monotonic()
            writer.write(b"line %d\n" % i)
            assert await reader.readline() == b"line %d\n" % i
            took = time.monotonic() - began
            assert took >= 2 * DELAY, f"round trip in {took * 1000:.1f} ms"
        # The end: our EOF reaches the echo server, its close comes back after the data.
        writer.write(b"tail")
        writer.write_eof()
        assert await reader.read() == b"tail"
        # Both ways ended: the relay has let go of the connection.
        assert not relay.open
        writer.close()


async def test_held_bytes_stay_bounded_when_the_sender_is_faster_than_the_delay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    peak = [0]

    class Watched(DelayLine):
        def push(self, now: float, chunk: bytes) -> None:
            super().push(now, chunk)
            peak[0] = max(peak[0], self.held)

    monkeypatch.setattr(bench.delayrelay, "DelayLine", Watched)
    limit, blob = 64 * 1024, os.urandom(4 << 20)
    async with relayed(echo, delay=0.005, limit=limit) as (_, address):
        reader, writer = await asyncio.open_connection(*address)

        async def send() -> None:
            writer.write(blob)
            await writer.drain()
            writer.write_eof()

        sending = asyncio.create_task(send())
        assert await reader.read() == blob
        await sending
        writer.close()
    # Reading stops once `limit` is held: past it by at most one read (256 KiB in asyncio).
    assert peak[0] <= limit + 256 * 1024, peak[0]


async def test_a_refused_target_closes_the_accepted_connection() -> None:
    probe = await asyncio.start_server(echo, "127.0.0.1", 0)
    closed_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    relay = Relay([Route(("127.0.0.1", 0), ("127.0.0.1", closed_port))], DELAY)
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection(*relay.addresses[0])
        writer.write(b"anyone?")
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""
        writer.close()
    finally:
        await relay.close()


def test_the_command_says_ready_and_stops_on_sigterm() -> None:
    with subprocess.Popen([sys.executable, "-m", "bench.delayrelay", "--delay-ms", "1",
                           "127.0.0.1:0=127.0.0.1:9"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            proc.terminate()
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_command_refuses_a_malformed_route() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.delayrelay", "--delay-ms", "1",
                           "127.0.0.1:5559"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "LISTEN_HOST:PORT=TARGET_HOST:PORT" in done.stderr
