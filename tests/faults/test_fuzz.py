"""Random frames at a live edge: it answers or closes cleanly, and keeps serving."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

import aiohttp

from tests.conftest import OpenWs
from tests.support.procs import Cluster
from tests.support.rawws import RawWs, mask_frame

SHAPES = [
    lambda r: '{"type":"join","payload":{"roomId":'
    + json.dumps(r.choice(["", "x" * 200, 5, None, [], {}]))
    + "}}",
    lambda r: '{"type":"chat","payload":{"message":' + json.dumps("m" * r.randrange(5000)) + "}}",
    lambda r: json.dumps({"type": r.choice(["join", "leave", "chat", "ping", "x", ""]),
                          "payload": r.choice([None, 1, "s", [], {"roomId": "f"}])}),
    lambda r: "".join(chr(r.randrange(0x20, 0x2FFF)) for _ in range(r.randrange(200))),
    lambda r: "{" * r.randrange(1, 3000),
    lambda r: json.dumps([[[[[[1]]]]]] * r.randrange(50)),
]


async def test_random_frames_never_break_an_edge(
    shared_cluster: Cluster,
    clients: OpenWs,
    raw_clients: Callable[..., RawWs],
    http_sessions: Callable[..., aiohttp.ClientSession],
) -> None:
    edge = shared_cluster.edges[2]
    rng = random.Random(7)
    client = await clients(edge.url)
    for _ in range(300):
        kind = rng.randrange(3)
        if kind == 0:
            await client.send(rng.choice(SHAPES)(rng))
        elif kind == 1:
            await client.ws.send_bytes(rng.randbytes(rng.randrange(1, 2000)))
        else:
            await client.ws._writer.send_frame(rng.randbytes(rng.randrange(1, 300)), 0x1)
        reply = await client.recv()
        assert reply["type"] in ("error", "joined", "left", "pong", "chat"), reply
        if reply["type"] == "error":
            assert reply["payload"]["code"] in (
                "bad_json", "unknown_type", "invalid_payload", "not_in_room",
                "room_required", "too_many_rooms",
            )
    await client.close()

    # Frames that end the connection: each gets the close code RFC 6455 names.
    raw_cases = [
        (mask_frame(0x1, b"x" * 70_000), 1009),  # over the frame cap
        (mask_frame(0x2, b"\x00" * 70_000), 1009),
        (b"\x81\x05hello", 1002),  # a client frame must be masked
        (mask_frame(0x3, b"reserved opcode"), 1002),
        (mask_frame(0x1, b'{"type":"ping"}', fin=False) + mask_frame(0x1, b"again"), 1002),
        (mask_frame(0x8, b"\x03\xe8\xff"), 1007),  # close reason not UTF-8
    ]
    for case, expected in raw_cases:
        raw = await asyncio.to_thread(raw_clients, edge.port)
        await asyncio.to_thread(raw.send_raw, case)
        code, _, _ = await asyncio.to_thread(raw.read_until_close)
        assert code == expected, (case[:8], code)
        raw.close()  # one connection at a time, as before

    async with http_sessions().get(edge.http + "/healthz") as resp:
        assert resp.status == 200
    a, b = await clients(edge.url), await clients(shared_cluster.edges[0].url)
    await a.join("after-fuzz")
    await b.join("after-fuzz")
    await b.chat("alive", "after-fuzz")
    assert (await a.recv_chat())["message"] == "alive"
