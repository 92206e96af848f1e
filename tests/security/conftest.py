"""Secured clusters (real broker and edge processes) and helpers to knock on their doors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from edge.tokens import mint
from tests.support.procs import Cluster, running_cluster

SECRET = "security-suite-secret-0123456789abcdef"
ALLOWED_ORIGINS = "https://chat.example,http://localhost:3000"


def token(sub: str, rooms: list[str] | None = None, ttl: float = 300.0) -> str:
    return mint(SECRET, sub, rooms, ttl)


def with_token(url: str, tok: str) -> str:
    return f"{url}?token={tok}"


async def upgrade_status(url: str, **kwargs: Any) -> int:
    """The HTTP status an upgrade gets: 101 if it is accepted, else the refusal."""
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, **kwargs)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


@pytest.fixture(scope="module")
def secure_cluster() -> Iterator[Cluster]:
    """Two edges that need tokens and check origins; default rate limits."""
    env = {"CHAT_JWT_SECRET": SECRET, "CHAT_ALLOWED_ORIGINS": ALLOWED_ORIGINS}
    with running_cluster(edges=2, env=env) as cluster:
        yield cluster


def expiring_token(sub: str, ttl: int) -> tuple[str, float]:
    """A token that expires `ttl` whole seconds after the current second; returns it and exp."""
    issued = int(time.time())
    return mint(SECRET, sub, None, ttl, now=issued), float(issued + ttl)
