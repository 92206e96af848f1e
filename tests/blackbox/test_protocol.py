"""Protocol v1 end to end, against real edges behind a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.wsclient import Closed, WsClient

Open = Callable[..., Any]


def room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def still_usable(client: WsClient) -> None:
    await client.send({"type": "ping"})
    await client.recv_type("pong")


async def test_ping_pong(edge_urls: list[str], clients: Open) -> None:
    c = await clients(edge_urls[0])
    await c.send({"type": "ping"})
    assert await c.recv() == {"type": "pong"}


async def test_websocket_at_root_and_ws_path(edge_urls: list[str], clients: Open) -> None:
    for url in (edge_urls[0], edge_urls[0].rstrip("/") + "/ws"):
        c = await clients(url)
        await still_usable(c)


async def test_chat_reaches_every_member_on_every_edge(
    edge_urls: list[str], clients: Open
) -> None:
    r = room()
    members = [await clients(url) for url in edge_urls for _ in range(2)]
    for m in members:
        await m.join(r)
    sender = members[0]
    await sender.chat("hello everyone", r)
    got = [await m.recv_chat() for m in members]
    assert {g["message"] for g in got} == {"hello everyone"}
    assert {g["roomId"] for g in got} == {r}
    assert len({g["id"] for g in got}) == 1  # same id at every member
    assert {g["from"] for g in got} == {sender.connection_id}
    assert all(isinstance(g["ts"], int) and g["ts"] > 1_600_000_000_000 for g in got)


async def test_joined_reply_and_idempotent_join(edge_urls: list[str], clients: Open) -> None:
    r = room()
    c = await clients(edge_urls[1])
    first = await c.join(r)
    assert first["payload"]["connectionId"]
    await c.join(r)  # again: same reply, still one membership
    other = await clients(edge_urls[2])
    await other.join(r)
    await other.chat("once", r)
    assert (await c.recv_chat())["message"] == "once"
    await c.send({"type": "ping"})
    assert (await c.recv())["type"] == "pong"  # the chat came once, not twice


async def test_short_form_goes_to_the_only_room(edge_urls: list[str], clients: Open) -> None:
    r = room()
    a, b = await clients(edge_urls[0]), await clients(edge_urls[1])
    await a.join(r)
    await b.join(r)
    await a.send('{"type":"chat","payload":{"message":"hi"}}')
    for c in (a, b):
        got = await c.recv_chat()
        assert got["message"] == "hi"
        assert got["roomId"] == r


async def test_from_is_stable_per_connection_and_distinct(
    edge_urls: list[str], clients: Open
) -> None:
    r = room()
    a, b = await clients(edge_urls[0]), await clients(edge_urls[0])
    await a.join(r)
    await b.join(r)
    senders = []
    for sender in (a, a, b):
        await sender.chat("x", r)
        senders.append((await a.recv_chat())["from"])
        await b.recv_chat()
    assert senders[0] == senders[1] == a.connection_id
    assert senders[2] == b.connection_id != a.connection_id


@pytest.mark.parametrize(
    ("mine", "other"),
    [("r1", "r10"), ("r", "r "), ("café", "cafe"), ("Room", "room"), ("日本", "日本語")],
)
async def test_rooms_are_isolated(
    edge_urls: list[str], clients: Open, mine: str, other: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    mine, other = suffix + mine, suffix + other
    listener = await clients(edge_urls[0])
    await listener.join(mine)
    sender = await clients(edge_urls[1])
    await sender.join(other)
    await sender.join(mine)
    await sender.chat("not for you", other)
    await sender.chat("marker", mine)
    # Both went through the same broker path in order: had the first leaked,
    # it would arrive before the marker.
    got = await listener.recv_chat()
    assert got == {**got, "message": "marker", "roomId": mine}


async def test_message_carried_unchanged(edge_urls: list[str], clients: Open) -> None:
    r = room("unicode room ✓")
    a, b = await clients(edge_urls[0]), await clients(edge_urls[2])
    await a.join(r)
    await b.join(r)
    text = 'line one\nline "two" \\ \t ünïcødé 🎉 <b>&amp;</b>' + "x" * 100
    await a.chat(text, r)
    assert (await b.recv_chat())["message"] == text
    assert (await a.recv_chat())["message"] == text


async def test_limits_at_the_boundaries(edge_urls: list[str], clients: Open) -> None:
    c = await clients(edge_urls[0])
    long_room = "é" * 128  # 128 characters, 256 bytes
    await c.join(long_room)
    await c.chat("y" * 4096, long_room)
    assert len((await c.recv_chat())["message"]) == 4096
    await c.chat("y" * 4097, long_room)
    await c.expect_error("invalid_payload")
    for bad in ("", "é" * 129, "a\x00b", "tab\there", "del\x7f", "c1\x85"):
        await c.send({"type": "join", "payload": {"roomId": bad}})
        await c.expect_error("invalid_payload")
    await still_usable(c)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1,2]", "bad_json"),
        ('"a string"', "bad_json"),
        ("{", "bad_json"),
        ('{"type":"dance","payload":{}}', "unknown_type"),
        ('{"payload":{"roomId":"x"}}', "unknown_type"),
        ('{"type":5}', "unknown_type"),
        ('{"type":"join"}', "invalid_payload"),
        ('{"type":"join","payload":{}}', "invalid_payload"),
        ('{"type":"join","payload":{"roomId":7}}', "invalid_payload"),
        ('{"type":"chat","payload":{"message":5}}', "invalid_payload"),
        ('{"type":"chat","payload":"hi"}', "invalid_payload"),
        ('{"type":"chat","payload":{"message":"hi"}}', "not_in_room"),
        ('{"type":"chat","payload":{"roomId":"nope","message":"hi"}}', "not_in_room"),
        ('{"type":"leave","payload":{"roomId":"nope"}}', "not_in_room"),
    ],
)
async def test_errors_keep_the_connection_working(
    edge_urls: list[str], clients: Open, frame: str, code: str
) -> None:
    c = await clients(edge_urls[1])
    await c.send(frame)
    await c.expect_error(code)
    await still_usable(c)


async def test_room_required_and_not_in_room(edge_urls: list[str], clients: Open) -> None:
    c = await clients(edge_urls[0])
    r1, r2 = room(), room()
    await c.join(r1)
    await c.join(r2)
    await c.chat("which room?")
    await c.expect_error("room_required")
    await c.chat("to r2", r2)
    assert (await c.recv_chat())["roomId"] == r2
    await c.chat("elsewhere", room())
    await c.expect_error("not_in_room")
    await still_usable(c)


async def test_too_many_rooms(edge_urls: list[str], clients: Open) -> None:
    c = await clients(edge_urls[2])
    prefix = room()
    for i in range(32):
        await c.join(f"{prefix}-{i}")
    await c.send({"type": "join", "payload": {"roomId": f"{prefix}-33"}})
    await c.expect_error("too_many_rooms")
    await c.leave(f"{prefix}-0")
    await c.join(f"{prefix}-33")


async def test_binary_frame_gets_an_error(edge_urls: list[str], clients: Open) -> None:
    c = await clients(edge_urls[0])
    await c.ws.send_bytes(b'{"type":"ping"}')
    await c.expect_error("bad_json")
    await still_usable(c)


@pytest.mark.parametrize(
    "text",
    [
        b'{"type":"join","payload":{"roomId":"\xff"}}',
        # Invalid bytes in a field the decoder would skip: still not a text message.
        b'{"type":"ping","extra":"\xc0\xaf"}',
    ],
)
async def test_invalid_utf8_text_closes_with_1007(
    edge_urls: list[str], clients: Open, text: bytes
) -> None:
    c = await clients(edge_urls[0])
    # A text frame whose bytes are not UTF-8, written below aiohttp's checks.
    writer = c.ws._writer
    await writer.send_frame(text, 0x1)
    with pytest.raises(Closed) as closed:
        await c.recv()
    assert closed.value.code == 1007


async def test_leave_stops_delivery(edge_urls: list[str], clients: Open) -> None:
    r, marker_room = room(), room()
    listener, sender = await clients(edge_urls[0]), await clients(edge_urls[1])
    for c in (listener, sender):
        await c.join(r)
        await c.join(marker_room)
    await listener.leave(r)
    await sender.chat("after leave", r)
    await sender.chat("marker", marker_room)
    got = await listener.recv_chat()
    assert (got["message"], got["roomId"]) == ("marker", marker_room)


async def test_several_rooms_per_connection(edge_urls: list[str], clients: Open) -> None:
    rooms = [room() for _ in range(3)]
    hub = await clients(edge_urls[0])
    for r in rooms:
        await hub.join(r)
    others = []
    for i, r in enumerate(rooms):
        other = await clients(edge_urls[(i + 1) % len(edge_urls)])
        await other.join(r)
        others.append(other)
    for other, r in zip(others, rooms, strict=True):
        await other.chat(f"in {r}", r)
        got = await hub.recv_chat()
        assert (got["roomId"], got["message"]) == (r, f"in {r}")


async def test_joined_means_live_across_edges(edge_urls: list[str], clients: Open) -> None:
    """The slow joiner: a message sent right after `joined` from another edge arrives."""
    sender = await clients(edge_urls[1])
    joiner = await clients(edge_urls[0])
    for i in range(25):  # 50 joins and leaves: within the default burst of 64
        r = room(f"fresh{i}")
        await sender.join(r)
        await joiner.send({"type": "join", "payload": {"roomId": r}})
        await joiner.recv_type("joined")
        await sender.chat(f"right away {i}", r)
        assert (await joiner.recv_chat())["message"] == f"right away {i}"
        await sender.recv_chat()
        await sender.leave(r)
        await joiner.leave(r)


async def test_same_order_at_every_member(edge_urls: list[str], clients: Open) -> None:
    r = room()
    per_edge = 2
    members = [await clients(u) for u in edge_urls for _ in range(per_edge)]
    for m in members:
        await m.join(r)
    senders = members[::per_edge]  # one per edge
    count = 30  # within the default chat burst of 40 per connection

    async def blast(i: int, s: WsClient) -> None:
        for n in range(count):
            await s.chat(f"{i}:{n}", r)

    await asyncio.gather(*(blast(i, s) for i, s in enumerate(senders)))
    total = count * len(senders)
    sequences = []
    for m in members:
        sequences.append([(await m.recv_chat())["message"] for _ in range(total)])
    assert all(seq == sequences[0] for seq in sequences)
    for i in range(len(senders)):  # one sender's messages keep their order
        mine = [int(x.split(":")[1]) for x in sequences[0] if x.startswith(f"{i}:")]
        assert mine == list(range(count))


async def test_ids_unique(edge_urls: list[str], clients: Open) -> None:
    r = room()
    members = [await clients(u) for u in edge_urls]
    for m in members:
        await m.join(r)
    for m in members:
        for _ in range(5):
            await m.chat("x", r)
    ids = [(await members[0].recv_chat())["id"] for _ in range(15)]
    assert len(set(ids)) == 15


async def test_raw_frames_exactly_as_documented(edge_urls: list[str], clients: Open) -> None:
    c = await clients(edge_urls[0])
    await c.send('{"type":"join","payload":{"roomId":"123"}}')
    joined = await c.recv_type("joined")
    assert joined["payload"]["roomId"] == "123"
    await c.send('{"type":"chat","payload":{"roomId":"123","message":"hi"}}')
    got = await c.recv()
    assert got["type"] == "chat"
    # v1 fields, and the epoch and offset of the room's stream (protocol v2 section 1).
    assert set(got["payload"]) == {
        "roomId", "message", "id", "from", "ts", "epoch", "offset",
        "name",  # protocol v2 section 7: the sender's display name
    }
    assert isinstance(got["payload"]["epoch"], str) and got["payload"]["offset"] >= 1
    await c.send('{"type":"leave","payload":{"roomId":"123"}}')
    assert await c.recv() == json.loads('{"type":"left","payload":{"roomId":"123"}}')
