"""What a Python team would reach for: python-socketio on aiohttp, rooms shared through redis.

Several of these processes run side by side; `AsyncRedisManager` publishes
every emit to redis, so a chat reaches the members on every process. Events
mirror protocol v1: "join", "leave", "chat", "ping" in; "joined", "left",
"chat", "pong", "error" out, with the same payloads. WebSocket transport
only, so no sticky sessions are needed.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence
from typing import Any

import socketio  # type: ignore[import-untyped]
from aiohttp import web

from bench.references._args import MAX_MESSAGE_CHARS, parse, valid_room


def build(redis_url: str) -> web.Application:
    sio: Any = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(redis_url),
        transports=["websocket"],
        cors_allowed_origins=None,
    )
    ids = itertools.count(1)

    async def fail(sid: str, code: str, message: str) -> None:
        await sio.emit("error", {"code": code, "message": message}, to=sid)

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, data: Any) -> None:
        room_id = valid_room(data.get("roomId") if isinstance(data, dict) else None)
        if room_id is None:
            await fail(sid, "invalid_payload", "roomId must be 1..128 characters")
            return
        await sio.enter_room(sid, room_id)
        await sio.emit("joined", {"roomId": room_id, "connectionId": sid}, to=sid)

    @sio.on("leave")  # type: ignore[untyped-decorator]
    async def leave(sid: str, data: Any) -> None:
        room_id = data.get("roomId") if isinstance(data, dict) else None
        if room_id not in sio.rooms(sid):
            await fail(sid, "not_in_room", f"not in room {room_id!r}")
            return
        await sio.leave_room(sid, room_id)
        await sio.emit("left", {"roomId": room_id}, to=sid)

    @sio.on("chat")  # type: ignore[untyped-decorator]
    async def chat(sid: str, data: Any) -> None:
        if not isinstance(data, dict):
            await fail(sid, "invalid_payload", "chat needs an object")
            return
        room_id, message = data.get("roomId"), data.get("message")
        if room_id is None or room_id == sid or room_id not in sio.rooms(sid):
            await fail(sid, "not_in_room", "join the room before chatting")
            return
        if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
            await fail(sid, "invalid_payload", "message must be text up to 4096 chars")
            return
        await sio.emit("chat", {
            "roomId": room_id, "message": message, "id": f"s{next(ids)}",
            "from": sid, "ts": time.time_ns() // 1_000_000,
        }, room=room_id)

    @sio.on("ping")  # type: ignore[untyped-decorator]
    async def ping(sid: str, data: Any = None) -> None:
        await sio.emit("pong", {}, to=sid)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv, redis=True)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(build(args.redis), host=args.host, port=args.port, access_log=None,
                print=None, backlog=4096, loop=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
