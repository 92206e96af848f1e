from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.support.procs import Cluster, running_cluster
from tests.support.wsclient import WsClient


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


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], Any]]:
    """`await clients(url)` opens a client that is closed after the test."""
    opened: list[WsClient] = []

    async def open_client(url: str, **kwargs: Any) -> WsClient:
        client = await WsClient.connect(url, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        with contextlib.suppress(Exception):
            await client.close()
