"""The naive Python port of the seed design: one aiohttp process, rooms in a dict.

Written the way a first port reads: the stdlib json module, and a chat
awaits `send_str` for each member in turn, so one slow member holds up the
rest of the room. It runs on uvloop like roomcast's edges, so that the
comparison is about the design, not the event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import WSMsgType, web

from bench.references._args import MAX_MESSAGE_CHARS, parse, valid_room

Rooms = dict[str, set[web.WebSocketResponse]]
ROOMS = web.AppKey("rooms", dict)
COUNTER = web.AppKey("counter", itertools.count)


def error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "payload": {"code": code, "message": message}})


async def handle(request: web.Request) -> web.StreamResponse:
    rooms: Rooms = request.app[ROOMS]
    counter = request.app[COUNTER]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    conn_id = f"n.{next(counter)}"
    mine: set[str] = set()
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await ws.send_str(error("bad_json", "send JSON text frames"))
                continue
            await on_frame(ws, conn_id, mine, rooms, counter, msg.data)
    finally:
        for room_id in mine:
            members = rooms.get(room_id)
            if members is not None:
                members.discard(ws)
                if not members:
                    del rooms[room_id]
    return ws


async def on_frame(
    ws: web.WebSocketResponse, conn_id: str, mine: set[str], rooms: Rooms,
    counter: itertools.count[int], data: str,
) -> None:
    try:
        frame: Any = json.loads(data)
    except ValueError:
        await ws.send_str(error("bad_json", "frame is not valid JSON"))
        return
    if not isinstance(frame, dict):
        await ws.send_str(error("bad_json", "frame must be a JSON object"))
        return
    kind = frame.get("type")
    payload = frame.get("payload") or {}
    if kind == "ping":
        await ws.send_str('{"type":"pong"}')
    elif kind == "join":
        room_id = valid_room(payload.get("roomId"))
        if room_id is None:
            await ws.send_str(error("invalid_payload", "roomId must be 1..128 characters"))
            return
        rooms.setdefault(room_id, set()).add(ws)
        mine.add(room_id)
        await ws.send_str(json.dumps(
            {"type": "joined", "payload": {"roomId": room_id, "connectionId": conn_id}}
        ))
    elif kind == "leave":
        room_id = payload.get("roomId")
        if room_id not in mine:
            await ws.send_str(error("not_in_room", f"not in room {room_id!r}"))
            return
        mine.discard(room_id)
        members = rooms[room_id]
        members.discard(ws)
        if not members:
            del rooms[room_id]
        await ws.send_str(json.dumps({"type": "left", "payload": {"roomId": room_id}}))
    elif kind == "chat":
        await chat(ws, conn_id, mine, rooms, counter, payload)
    else:
        await ws.send_str(error("unknown_type", f"unknown type {kind!r}"))


async def chat(
    ws: web.WebSocketResponse, conn_id: str, mine: set[str], rooms: Rooms,
    counter: itertools.count[int], payload: dict[str, Any],
) -> None:
    room_id = payload.get("roomId")
    message = payload.get("message")
    if room_id is None and len(mine) == 1:
        room_id = next(iter(mine))
    if room_id not in mine:
        await ws.send_str(error("not_in_room", "join the room before chatting"))
        return
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        await ws.send_str(error("invalid_payload", "message must be text up to 4096 chars"))
        return
    out = json.dumps({"type": "chat", "payload": {
        "roomId": room_id, "message": message, "id": f"m{next(counter)}",
        "from": conn_id, "ts": time.time_ns() // 1_000_000,
    }})
    for member in list(rooms[room_id]):
        with contextlib.suppress(ConnectionError):  # a member that left mid-fan-out
            await member.send_str(out)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    app = web.Application()
    app[ROOMS] = {}
    app[COUNTER] = itertools.count(1)
    app.router.add_get("/", handle)
    app.router.add_get("/ws", handle)
    app.router.add_get("/healthz", healthz)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None,
                backlog=4096, loop=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
