from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import zmq

from tests.support.procs import Cluster, running_cluster
from tests.support.rawws import RawWs
from tests.support.wsclient import WsClient

CLOSE_WAIT = 2.0  # seconds a client's close handshake may take at teardown


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[Cluster]:
    """One broker and three edges shared by tests that do not break anything."""
    with running_cluster(edges=3) as cluster:
        yield cluster


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., Cluster]]:
    """Fresh clusters for tests that kill or reconfigure processes."""
    stack: list[Any] = []

    def make(**kwargs: Any) -> Cluster:
        cm = running_cluster(**kwargs)
        cluster = cm.__enter__()
        stack.append(cm)
        return cluster

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


OpenWs = Callable[..., Awaitable[WsClient]]


@pytest.fixture
async def clients() -> AsyncIterator[OpenWs]:
    """`await clients(url)` opens a client that is closed after the test, even when
    the test failed or its edge is gone."""
    opened: list[WsClient] = []

    async def open_client(url: str, **kwargs: Any) -> WsClient:
        client = await WsClient.connect(url, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        # A dead edge never answers the close handshake: bound the wait, then
        # release the session whatever happened.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.ws.close(), CLOSE_WAIT)
        await client.session.close()


@pytest.fixture
def raw_clients() -> Iterator[Callable[..., RawWs]]:
    """`raw_clients(port, **options)`: a raw-socket WebSocket closed after the test.
    Safe to call from a worker thread (`asyncio.to_thread`)."""
    opened: list[RawWs] = []

    def open_raw(port: int, **kwargs: Any) -> RawWs:
        raw = RawWs(port, **kwargs)
        opened.append(raw)
        return raw

    yield open_raw
    for raw in opened:
        raw.close()


@pytest.fixture
async def http_sessions() -> AsyncIterator[Callable[..., aiohttp.ClientSession]]:
    """`http_sessions()`: an aiohttp session (and every WebSocket it opened) closed
    after the test."""
    opened: list[aiohttp.ClientSession] = []

    def open_session(**kwargs: Any) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(**kwargs)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        await session.close()


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A ZeroMQ context whose sockets are all closed (linger 0) after the test."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
