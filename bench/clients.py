"""Client connections of the load generator: protocol v1 (raw asyncio), or Socket.IO.

Both offer the same four calls (join, leave, chat, close) and report every
chat they receive to one callback, so a workload never knows which server it
drives. `join` and `leave` wait for the server's reply; `chat` does not.
Only protocol v2 servers (ours) know presence: a join that asks for it, and
the `presence_join`/`presence_leave` events that follow, which are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import msgspec

from bench import rawclient
from protocol.codec import decode_server_frame, encode
from protocol.messages import (
    ChatBody,
    ChatDelivery,
    ChatMessage,
    ChatRequest,
    Error,
    JoinBody,
    Joined,
    JoinedBody,
    JoinRequest,
    LeaveRequest,
    Left,
    Position,
    PresenceJoin,
    PresenceLeave,
    RoomRef,
)

OnChat = Callable[[str, str], None]
REPLY_TIMEOUT = 20.0
CONNECT_TIMEOUT = 30.0


class ServerError(Exception):
    """An error frame, or a connection that went away while a reply was due."""


class Conn(Protocol):
    errors: int
    presence_events: int
    on_chat: OnChat

    async def join(self, room_id: str, presence: bool = False) -> None: ...
    async def leave(self, room_id: str) -> None: ...
    async def chat(self, room_id: str, message: str) -> None: ...
    async def close(self) -> None: ...


def ignore_chat(room_id: str, message: str) -> None:
    pass


def as_user(url: str, user: str, name: str) -> str:
    """`url` claiming a user and a display name (open mode's upgrade query)."""
    return f"{url}?{urlencode({'user': user, 'name': name})}"


class _Replies:
    """At most one request (join or leave) waits for its reply at a time."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[Any] | None = None

    def expect(self) -> asyncio.Future[Any]:
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def resolve(self, error: str | None = None, value: Any = None) -> bool:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return False
        if error is None:
            waiter.set_result(value)
        else:
            waiter.set_exception(ServerError(error))
        return True


class WsConn:
    """Protocol v1: JSON text frames, encoded and decoded by `protocol`."""

    def __init__(self, on_chat: OnChat) -> None:
        self.on_chat = on_chat
        self.errors = 0
        self.presence_events = 0
        self._replies = _Replies()
        self._ws: rawclient.ClientProtocol | None = None

    @classmethod
    async def open(cls, url: str, on_chat: OnChat) -> WsConn:
        conn = cls(on_chat)
        conn._ws = await rawclient.connect(url, conn._dispatch)
        conn._ws.on_lost = conn._gone
        return conn

    def _gone(self) -> None:
        self._replies.resolve("connection closed")

    def _dispatch(self, data: bytes) -> None:
        try:
            frame = decode_server_frame(data)
        except msgspec.DecodeError:
            self.errors += 1
            return
        if type(frame) is ChatMessage:
            body = frame.payload
            self.on_chat(body.room_id, body.message)
        elif type(frame) is Joined or type(frame) is Left:
            self._replies.resolve()
        elif type(frame) is PresenceJoin or type(frame) is PresenceLeave:
            self.presence_events += 1
        elif type(frame) is Error:
            self.errors += 1
            self._replies.resolve(f"{frame.payload.code}: {frame.payload.message}")

    def _send(self, frame: Any) -> None:
        assert self._ws is not None
        self._ws.send_text(encode(frame))

    async def _request(self, frame: Any) -> Any:
        waiter = self._replies.expect()
        self._send(frame)
        return await asyncio.wait_for(waiter, REPLY_TIMEOUT)

    async def join(self, room_id: str, presence: bool = False) -> None:
        await self._request(JoinRequest(JoinBody(room_id, presence=presence or None)))

    async def leave(self, room_id: str) -> None:
        await self._request(LeaveRequest(RoomRef(room_id)))

    async def chat(self, room_id: str, message: str) -> None:
        self._send(ChatRequest(ChatBody(message, room_id)))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    def abort(self) -> None:
        """Drop the TCP connection at once (a reset): no close handshake."""
        if self._ws is not None:
            self._ws.abort()


class StreamConn(WsConn):
    """Protocol v2: every chat with its epoch and offset, joins with `since`.

    Chats go to `on_delivery` whole (epoch, offset, msgId); `positions` holds
    the last (epoch, offset) seen per room, from `joined` or a chat, which is
    what a rejoin passes as `since`.
    """

    def __init__(self, on_delivery: Callable[[ChatDelivery], None]) -> None:
        super().__init__(ignore_chat)
        self.on_delivery = on_delivery
        self.positions: dict[str, tuple[str, int]] = {}

    @classmethod
    async def open_stream(
        cls, url: str, on_delivery: Callable[[ChatDelivery], None]
    ) -> StreamConn:
        conn = cls(on_delivery)
        conn._ws = await rawclient.connect(url, conn._dispatch)
        conn._ws.on_lost = conn._gone
        return conn

    def _dispatch(self, data: bytes) -> None:
        try:
            frame = decode_server_frame(data)
        except msgspec.DecodeError:
            self.errors += 1
            return
        if type(frame) is ChatMessage:
            body = frame.payload
            if body.epoch is not None and body.offset is not None:
                self.positions[body.room_id] = (body.epoch, body.offset)
            self.on_delivery(body)
        elif type(frame) is Joined:
            joined = frame.payload
            if joined.epoch is not None and joined.offset is not None:
                self.positions[joined.room_id] = (joined.epoch, joined.offset)
            self._replies.resolve(value=joined)
        elif type(frame) is Left:
            self._replies.resolve()
        elif type(frame) is Error:
            self.errors += 1
            self._replies.resolve(f"{frame.payload.code}: {frame.payload.message}")

    async def join_stream(
        self, room_id: str, since: tuple[str, int] | None = None, history: int | None = None
    ) -> JoinedBody:
        """Join; the answer carries the room's epoch and top (and `recovered` with `since`)."""
        position = Position(*since) if since is not None else None
        joined: JoinedBody = await self._request(
            JoinRequest(JoinBody(room_id, history, position)))
        return joined


class SioConn:
    """Socket.IO: events "join", "leave", "chat" carrying the protocol v1 payloads."""

    def __init__(self, session: aiohttp.ClientSession, on_chat: OnChat) -> None:
        import socketio  # type: ignore[import-untyped]  # only the socket.io runs need it

        self.on_chat = on_chat
        self.errors = 0
        self.presence_events = 0  # the socket.io reference has no presence
        self._replies = _Replies()
        self.client: Any = socketio.AsyncClient(
            reconnection=False, http_session=session, handle_sigint=False
        )
        self.client.on("chat", self._chat)
        self.client.on("joined", self._reply)
        self.client.on("left", self._reply)
        self.client.on("error", self._error)
        self.client.on("disconnect", self._gone)

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str, on_chat: OnChat) -> SioConn:
        conn = cls(session, on_chat)
        await conn.client.connect(url, transports=["websocket"], wait_timeout=CONNECT_TIMEOUT)
        return conn

    def _chat(self, data: dict[str, Any]) -> None:
        self.on_chat(data["roomId"], data["message"])

    def _reply(self, data: dict[str, Any]) -> None:
        self._replies.resolve()

    def _error(self, data: dict[str, Any]) -> None:
        self.errors += 1
        self._replies.resolve(f"{data.get('code')}: {data.get('message')}")

    def _gone(self, *args: Any) -> None:
        self._replies.resolve("connection closed")

    async def _request(self, event: str, payload: dict[str, str]) -> None:
        waiter = self._replies.expect()
        await self.client.emit(event, payload)
        await asyncio.wait_for(waiter, REPLY_TIMEOUT)

    async def join(self, room_id: str, presence: bool = False) -> None:
        if presence:
            raise ServerError("the socket.io reference has no presence")
        await self._request("join", {"roomId": room_id})

    async def leave(self, room_id: str) -> None:
        await self._request("leave", {"roomId": room_id})

    async def chat(self, room_id: str, message: str) -> None:
        await self.client.emit("chat", {"roomId": room_id, "message": message})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 5.0)


async def open_conn(
    transport: str, session: aiohttp.ClientSession, url: str, on_chat: OnChat = ignore_chat
) -> Conn:
    if transport == "sio":
        return await asyncio.wait_for(SioConn.open(session, url, on_chat), CONNECT_TIMEOUT)
    return await asyncio.wait_for(WsConn.open(url, on_chat), CONNECT_TIMEOUT)


def new_session() -> aiohttp.ClientSession:
    # No pool limit: every member holds its own upgraded connection for the whole run.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
