"""A bare protocol-v1 WebSocket client for tests: JSON frames in, JSON frames out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

RECV_TIMEOUT = 10.0


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class WsClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws
        self.connection_id: str | None = None

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, autoping=True, **kwargs)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            value: dict[str, Any] = json.loads(msg.data)
            return value
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING):
            raise Closed(self.ws.close_code, str(msg.extra or ""))
        raise AssertionError(f"unexpected frame {msg!r}")

    async def recv_type(self, kind: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def join(self, room: str) -> dict[str, Any]:
        await self.send({"type": "join", "payload": {"roomId": room}})
        frame = await self.recv_type("joined")
        assert frame["payload"]["roomId"] == room
        self.connection_id = frame["payload"].get("connectionId")
        return frame

    async def leave(self, room: str) -> None:
        await self.send({"type": "leave", "payload": {"roomId": room}})
        frame = await self.recv_type("left")
        assert frame["payload"]["roomId"] == room

    async def chat(self, message: str, room: str | None = None) -> None:
        payload: dict[str, Any] = {"message": message}
        if room is not None:
            payload["roomId"] = room
        await self.send({"type": "chat", "payload": payload})

    async def recv_chat(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        payload: dict[str, Any] = (await self.recv_type("chat", timeout))["payload"]
        return payload

    async def expect_error(self, code: str) -> dict[str, Any]:
        frame = await self.recv_type("error")
        assert frame["payload"]["code"] == code, frame
        assert frame["payload"]["message"]
        return frame


async def connect_all(urls: list[str]) -> list[WsClient]:
    return list(await asyncio.gather(*(WsClient.connect(u) for u in urls)))
