"""kill -9 of an edge while its clients send chats with msgIds: the senders' library
reconnects to other edges, resends what was not acknowledged, and every member on the
surviving edges sees every chat exactly once, in offset order."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chatclient import Ack, ChatClient, connect
from protocol.messages import ChatDelivery
from tests.support.procs import Cluster

SENDERS = 20
LISTENERS = 20
CHATS = 200  # per sender
IN_FLIGHT = 8  # unacknowledged sends per sender at a time
KILL_AFTER = SENDERS * CHATS // 4  # acks before the edge dies
DEADLINE = 45.0  # the whole exchange, kill and recovery included

OpenClient = Callable[..., Awaitable[ChatClient]]


@pytest.fixture
async def open_client() -> AsyncIterator[OpenClient]:
    """`await open_client(urls, **options)`: a started ChatClient, closed after the test."""
    opened: list[ChatClient] = []

    async def make(urls: Any, **options: Any) -> ChatClient:
        client = await connect(urls, **options).start()
        opened.append(client)
        return client

    yield make
    await asyncio.gather(*(client.close() for client in opened))


async def test_senders_on_a_killed_edge_resend_and_listeners_see_every_chat_once(
    cluster_factory: Callable[..., Cluster], open_client: OpenClient
) -> None:
    cluster = cluster_factory(edges=3, env={"CHAT_RATE_LIMIT": "0"})
    victim, e1, e2 = cluster.edges
    r = "kill-" + uuid.uuid4().hex[:8]
    listeners = [
        await open_client([(e1, e2)[i % 2].url]) for i in range(LISTENERS)
    ]
    # Each sender starts on the victim and fails over to the next URL of its list.
    senders = [
        await open_client([victim.url, (e1, e2)[i % 2].url, (e2, e1)[i % 2].url])
        for i in range(SENDERS)
    ]
    await asyncio.gather(*(c.join(r) for c in [*listeners, *senders]))
    assert all(s.url == victim.url for s in senders)

    acked = 0
    enough = asyncio.Event()
    acks: list[Ack] = []

    async def send_all(index: int, sender: ChatClient) -> None:
        nonlocal acked
        window = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            nonlocal acked
            async with window:
                ack = await sender.send(r, f"{index}:{i}", msg_id=f"s{index}-{i}")
            acks.append(ack)
            acked += 1
            if acked == KILL_AFTER:
                enough.set()

        await asyncio.gather(*(one(i) for i in range(CHATS)))

    async def listen(listener: ChatClient) -> list[ChatDelivery]:
        got: list[ChatDelivery] = []
        while len(got) < SENDERS * CHATS:
            got.append(await listener.receive())
        return got

    started = time.monotonic()
    async with asyncio.timeout(DEADLINE):
        listening = [asyncio.create_task(listen(c)) for c in listeners]
        sending = asyncio.gather(*(send_all(i, s) for i, s in enumerate(senders)))
        await enough.wait()
        killed_at = acked
        victim.proc.kill9()
        await sending
        sent_in = time.monotonic() - started
        received = await asyncio.gather(*listening)
    took = time.monotonic() - started

    resent = sum(s.resent for s in senders)
    duplicates = sum(a.duplicate for a in acks)
    print(
        f"\n{SENDERS} senders x {CHATS} chats, {LISTENERS} listeners: edge killed after "
        f"{killed_at} acks; {resent} resent, {duplicates} acked as duplicates; all acked "
        f"in {sent_in:.1f} s, all received in {took:.1f} s"
    )
    expected = {f"{s}:{i}" for s in range(SENDERS) for i in range(CHATS)}
    assert len(acks) == len(expected)
    assert {a.offset for a in acks} == set(range(1, len(expected) + 1))
    assert all(s.url != victim.url and s.generation == 2 for s in senders)
    assert resent > 0
    for listener, got in zip(listeners, received, strict=True):
        assert [m.offset for m in got] == list(range(1, len(expected) + 1))  # in offset order
        assert len({m.message for m in got}) == len(got)  # each chat once
        assert {m.message for m in got} == expected  # every chat
        assert listener.duplicates == 0 and listener.generation == 1
