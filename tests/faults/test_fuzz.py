"""Random frames at a live edge: it answers or closes cleanly, and keeps serving."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

import aiohttp
import pytest

from protocol.frames import masked_frame
from protocol.websocket import OP_BINARY, OP_CLOSE, OP_TEXT
from tests.conftest import OpenWs
from tests.support.procs import Cluster
from tests.support.rawws import RawWs, malformed_frame
from tests.support.wsclient import Closed

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


def utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


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
            text = rng.randbytes(rng.randrange(1, 300))
            await client.ws._writer.send_frame(text, 0x1)
            if not utf8(text):  # RFC 6455 8.1: fail the connection with 1007
                with pytest.raises(Closed) as closed:
                    await client.recv()
                assert closed.value.code == 1007
                client = await clients(edge.url)
                continue
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
        (masked_frame(OP_TEXT, b"x" * 70_000), 1009),  # over the frame cap
        (masked_frame(OP_BINARY, b"\x00" * 70_000), 1009),
        (malformed_frame(OP_TEXT, b"hello", masked=False), 1002),  # clients must mask
        (masked_frame(0x3, b"reserved opcode"), 1002),
        (masked_frame(OP_TEXT, b'{"type":"ping"}', fin=False) + masked_frame(OP_TEXT, b"a"), 1002),
        (masked_frame(OP_CLOSE, b"\x03\xe8\xff"), 1007),  # close reason not UTF-8
        (masked_frame(OP_TEXT, b'{"type":"ping","x":"\xff"}'), 1007),  # text not UTF-8
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
