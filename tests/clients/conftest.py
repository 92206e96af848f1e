"""Clusters whose edges know each other (`--peers`) and accept the HTTP publish key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from chatclient import ChatClient, connect
from tests.support.procs import Cluster, free_port

API_KEY = "test-api-key-0123456789"

OpenClient = Callable[..., Awaitable[ChatClient]]


@contextlib.contextmanager
def peered_cluster(edges: int = 3, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A broker and `edges` edges, each told every edge's URL through CHAT_PEERS."""
    ports = [free_port() for _ in range(edges)]
    peers = ",".join(f"ws://127.0.0.1:{port}/" for port in ports)
    cluster = Cluster(
        f"tcp://127.0.0.1:{free_port()}",
        f"tcp://127.0.0.1:{free_port()}",
        {"CHAT_PEERS": peers, "CHAT_API_KEY": API_KEY} | (env or {}),
    )
    try:
        cluster.start_broker()
        for port in ports:
            cluster.start_edge(port)
        for edge in cluster.edges:
            edge.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def client_cluster() -> Iterator[Cluster]:
    """Shared by the client tests that break nothing; a connection may be in 3 rooms, and
    rooms named crowd-* publish presence events up to 1 member only."""
    with peered_cluster(3, {"CHAT_MAX_ROOMS": "3",
                            "CHAT_PRESENCE_EVENTS_RULES": "crowd-*=1"}) as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster() -> Iterator[Callable[..., Cluster]]:
    """`fresh_cluster(edges=2)`: a cluster of its own, for tests that kill processes."""
    with contextlib.ExitStack() as stack:

        def make(edges: int = 2, env: dict[str, str] | None = None) -> Cluster:
            return stack.enter_context(peered_cluster(edges, env))

        yield make


@pytest.fixture
async def open_client() -> AsyncIterator[OpenClient]:
    """`await open_client(urls, **options)`: a started ChatClient, closed after the test."""
    opened: list[ChatClient] = []

    async def make(urls: Any, **options: Any) -> ChatClient:
        client = await connect(urls, **options).start()
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()
