"""The asyncio chat client: one WebSocket at a time, failing over across edges.

    async with connect(["ws://127.0.0.1:8081/", "ws://127.0.0.1:8082/"],
                       user="alice", name="Alice") as client:
        await client.join("lobby", history=20, presence=True)
        print([m.name for m in await client.presence("lobby")])
        ack = await client.send("lobby", "hello")
        async for message in client:
            print(message.room_id, message.name, message.message)

When the connection drops, the client waits (exponential backoff, full
jitter), connects to the next URL of the list, and rejoins its rooms before
any new request goes out, each with `since` = the last chat it saw there, so
the edge replays exactly what was missed (and with `presence` again where it
was asked for). Requests made meanwhile wait for
that. Every chat carries a msgId; one not yet acknowledged when the
connection dropped is sent again with the same msgId, which the broker
delivers at most once, so the caller sees one delivery and gets its ack.

This module only moves bytes; `chatclient.core` decides what they mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import aiohttp
import msgspec
from yarl import URL

from chatclient.backoff import Backoff
from chatclient.core import (
    Delivered,
    Done,
    Listing,
    Member,
    Noted,
    PresenceEvent,
    Request,
    Stray,
    StreamEvent,
    Tracker,
)
from chatclient.errors import (
    ChatError,
    ClientClosed,
    ClientError,
    ConnectionLost,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from protocol.codec import decode_server_frame
from protocol.identity import label_error
from protocol.messages import AckBody, ChatDelivery

log = logging.getLogger("chatclient")

REQUEST_TIMEOUT = 10.0
CONNECT_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 5.0
HEARTBEAT = 10.0  # seconds between WebSocket pings; no pong within half of it drops the link
INBOX_SIZE = 10_000
REJOIN_TRIES = 20
RESEND_WINDOW = 60.0  # a send is retried this long; well inside the broker's dedupe window
UNAVAILABLE_RETRIES = 5  # `unavailable` answers to one send before it fails
OWN_IDS = 10_000  # msgIds of the latest chats sent, by which is_own knows their copies

Item = ChatDelivery | StreamEvent | PresenceEvent


@dataclass(frozen=True, slots=True)
class Connected:
    url: str
    generation: int  # 1 for the first connection, +1 per reconnect
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Disconnected:
    url: str
    reason: str
    retry_in: float
    next_url: str


Status = Connected | Disconnected


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """A list of URLs, or one string with URLs separated by commas or spaces."""
    items = [urls] if isinstance(urls, str) else list(urls)
    out = [u for item in items for u in item.replace(",", " ").split() if u]
    if not out:
        raise ValueError("no WebSocket URL given")
    return out


class ChatClient:
    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: str | None = None,
        user: str | None = None,
        name: str | None = None,
        backoff: Backoff | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        heartbeat: float | None = HEARTBEAT,
        inbox_size: int = INBOX_SIZE,
        on_status: Callable[[Status], None] | None = None,
        resend_window: float = RESEND_WINDOW,
        unavailable_retries: int = UNAVAILABLE_RETRIES,
    ) -> None:
        self.urls = split_urls(urls)
        for what, value in (("user", user), ("name", name)):
            # The edge would refuse every upgrade with 400: say why once, here.
            if value is not None and (why := label_error(what, value)):
                raise ValueError(why)
        self.token = token
        self.user = user  # sent in open mode only: a token names the user itself
        self.name = name
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.on_status = on_status
        self.resend_window = resend_window
        self.unavailable_retries = unavailable_retries
        self.resent = 0  # chats sent again after a lost connection or `unavailable`
        self.rooms: set[str] = set()  # rooms to be in; rejoined after every reconnect
        self.url: str | None = None  # the edge currently connected to
        self.connection_id: str | None = None
        self.connection_ids: set[str] = set()  # every id this client had: its own messages
        self.generation = 0
        self.dropped = 0  # deliveries discarded because the inbox was full
        self._url_index = 0
        self._tracker = Tracker()
        self._waiters: dict[Request, asyncio.Future[Request]] = {}
        self._history: dict[str, int] = {}  # a room's `history` K, asked again on rejoins
        self._presence: set[str] = set()  # rooms joined with presence events, kept on rejoins
        # msgIds of the latest chats sent: is_own recognises their copies by them.
        self._sent_ids: deque[str] = deque(maxlen=OWN_IDS)
        self._sent_set: set[str] = set()
        self._inbox: asyncio.Queue[Item | ClientError | None] = asyncio.Queue(inbox_size)
        self._changed = asyncio.Condition()
        self._ready = False
        self._closed = False
        self._fatal: ClientError | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    # Lifecycle.

    async def start(self) -> ChatClient:
        """Connect (trying every URL with backoff) within `connect_timeout` seconds."""
        if self._runner is not None:
            return self
        self._session = aiohttp.ClientSession()
        self._runner = asyncio.create_task(self._run(), name="chatclient")
        try:
            await asyncio.wait_for(self.wait_connected(), self.connect_timeout)
        except TimeoutError:
            await self.close()
            raise ConnectionError(
                f"no edge reachable within {self.connect_timeout:g} s: {', '.join(self.urls)}"
            ) from None
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._fail_waiting(ClientClosed("client closed"))
        self._put(None)
        await self._notify(ready=False)

    async def __aenter__(self) -> ChatClient:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ready

    async def wait_connected(self, after: int = 0) -> None:
        """Wait until a connection newer than generation `after` is up, rooms rejoined."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._stopped() or (self._ready and self.generation > after)
            )
        self._raise_if_stopped()

    # Requests.

    async def join(
        self, room_id: str, history: int | None = None, presence: bool = False
    ) -> str:
        """Join a room; return this connection's id once the room is live. With
        `history` K the room's last K chats (at most the edge's cap) come first.
        With `presence`, the room's `PresenceJoin` and `PresenceLeave` events
        arrive among the chats in `events()`, also after a reconnect."""
        self.rooms.add(room_id)
        if history:
            self._history[room_id] = history
        if presence:
            self._presence.add(room_id)
        else:
            self._presence.discard(room_id)
        while True:
            generation = self.generation
            try:
                request = await self._request(
                    Request.join(room_id, history or None, presence=presence)
                )
            except ConnectionLost:
                # The reconnect rejoins it; ask again on the new connection.
                await self.wait_connected(after=generation)
                continue
            except BaseException:
                self.rooms.discard(room_id)
                self._history.pop(room_id, None)
                self._presence.discard(room_id)
                raise
            assert request.connection_id is not None
            return request.connection_id

    async def leave(self, room_id: str) -> None:
        was_member = room_id in self.rooms
        self.rooms.discard(room_id)
        self._history.pop(room_id, None)
        self._presence.discard(room_id)
        self._tracker.forget(room_id)
        if was_member and not self._ready:
            return  # the next connection will not rejoin it
        try:
            await self._request(Request.leave(room_id))
        except ConnectionLost:
            pass
        except ChatError as exc:
            if not (was_member and exc.code == "not_in_room"):
                raise

    async def send(
        self, room_id: str | None, message: str, *, msg_id: str | None = None
    ) -> AckBody:
        """Send a chat and return its ack (room, msgId, epoch, offset, duplicate) once
        the broker has sequenced it; every member, this client included, receives it.
        `room_id=None` uses the short form; `msg_id` defaults to a random UUID.

        A lost connection or an `unavailable` does not fail the call: the chat is
        sent again with the same msgId (the broker drops repeats) after the
        reconnect, for up to `resend_window` seconds and `unavailable_retries`
        refusals; then `ConnectionLost` or `Unavailable`. Any other refusal raises
        its `ChatError` at once."""
        msg_id = msg_id or uuid.uuid4().hex
        self._remember(msg_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resend_window
        refusals = 0
        attempt = 0
        while True:
            if attempt:
                self.resent += 1
            attempt += 1
            generation = self.generation
            try:
                request = await self._request(Request.chat(room_id, message, msg_id))
            except ConnectionLost:
                left = deadline - loop.time()
                if self._stopped() or left <= 0:
                    raise
                try:  # a newer connection, its rooms rejoined (and caught up) first
                    await asyncio.wait_for(self.wait_connected(after=generation), left)
                except TimeoutError:
                    raise ConnectionLost(
                        f"no connection within {self.resend_window:g} s to resend"
                    ) from None
                continue
            except Unavailable:
                refusals += 1
                if refusals > self.unavailable_retries or loop.time() >= deadline:
                    raise
                await asyncio.sleep(min(1.0, 0.1 * 2**refusals))
                continue
            assert request.ack is not None
            return request.ack

    async def presence(self, room_id: str) -> Listing:
        """Every user with a live connection in the room, on any edge, once, with its
        display name and number of connections, in the server's order (by user id):
        a list of `Member`, whose `events` is False when the room is too big for
        join and leave events (none will come: ask again to see who is there).
        A long list comes in pages, which this fetches one after the other. Only a
        member of the room may ask (`NotInRoom` otherwise). A dropped connection
        starts the listing again on the next one."""
        while True:
            generation = self.generation
            try:
                return await self._list(room_id)
            except ConnectionLost:
                await self.wait_connected(after=generation)

    async def _list(self, room_id: str) -> Listing:
        members: dict[str, Member] = {}
        cursor: str | None = None
        events = True
        while True:
            request = await self._request(Request.presence(room_id, cursor))
            page = request.listing
            assert page is not None
            events = events and page.events
            for u in page.users:
                members[u.user] = Member(u.user, u.name, u.connections)
            if page.next is None or page.next == cursor:  # the same cursor would loop
                return Listing(members.values(), events)
            cursor = page.next

    @property
    def duplicates(self) -> int:
        """Chats dropped because this client had delivered them already (a replay that
        overlapped what it had seen)."""
        return self._tracker.duplicates

    def position(self, room_id: str) -> tuple[str, int] | None:
        """(epoch, offset) of the last chat seen in a room: where a rejoin resumes."""
        return self._tracker.position(room_id)

    async def ping(self) -> float:
        """Round-trip time to the edge, in seconds."""
        started = time.perf_counter()
        await self._request(Request.ping())
        return time.perf_counter() - started

    async def send_raw(self, frame: str | bytes) -> None:
        """Send any text frame and wait for the edge's verdict (for testing servers)."""
        await self._request(Request.raw(frame.encode() if isinstance(frame, str) else frame))

    # Receiving.

    def __aiter__(self) -> ChatClient:
        return self

    async def __anext__(self) -> ChatDelivery:
        while True:
            item = await self._next_item()
            if isinstance(item, ChatDelivery):
                return item

    async def events(self) -> AsyncIterator[Item]:
        """Chats and what happened to the rooms' streams, in the order they arrived:
        `Joined(room_id, connection_id, epoch, offset, recovered)` for every join and
        rejoin (`recovered` False: chats may have been missed), and
        `Resynced(room_id, epoch, offset)`; in rooms joined with `presence=True`,
        `PresenceJoin(room_id, user, name)` and `PresenceLeave(room_id, user)`.
        Read either this or the client itself."""
        while True:
            try:
                yield await self._next_item()
            except StopAsyncIteration:
                return

    async def _next_item(self) -> Item:
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # every later call ends too
            raise StopAsyncIteration
        if isinstance(item, ClientError):
            raise item
        return item

    async def receive(self) -> ChatDelivery:
        """The next chat message of any joined room (bound the wait with `asyncio.timeout`)."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise ClientClosed("client closed") from None

    def is_own(self, message: ChatDelivery) -> bool:
        """Whether this client sent it. A chat with a msgId (every `send` gives one) is
        known by it, among the latest 10,000 this client sent: the same user's other
        connections are other clients, though their chats have the same `from`. A chat
        without one, by its `from` being one of this client's connection ids."""
        if message.msg_id is not None:
            return message.msg_id in self._sent_set
        return message.sender in self.connection_ids

    def _remember(self, msg_id: str) -> None:
        if msg_id in self._sent_set:
            return
        if len(self._sent_ids) == self._sent_ids.maxlen:
            self._sent_set.discard(self._sent_ids[0])
        self._sent_ids.append(msg_id)
        self._sent_set.add(msg_id)

    # Internals.

    def _stopped(self) -> bool:
        return self._closed or self._fatal is not None

    def _raise_if_stopped(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("client closed")

    async def _notify(self, ready: bool) -> None:
        async with self._changed:
            self._ready = ready
            self._changed.notify_all()

    async def _request(self, request: Request, wait: bool = True) -> Request:
        if wait:
            async with self._changed:
                await self._changed.wait_for(lambda: self._stopped() or self._ready)
        self._raise_if_stopped()
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        future: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
        self._waiters[request] = future
        try:
            async with self._write_lock:
                if self._ws is not ws or future.done():
                    raise ConnectionError("connection replaced")
                # A request and its ping go out back to back: see chatclient.core.
                for frame in self._tracker.send(request):
                    await ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self._waiters.pop(request, None)
            raise ConnectionLost("connection lost while sending") from None
        try:
            done = await asyncio.wait_for(asyncio.shield(future), self.request_timeout)
        except TimeoutError:
            self._waiters.pop(request, None)
            self._tracker.abandon(request)
            raise TimeoutError(
                f"no answer to {request.kind.value} within {self.request_timeout:g} s"
            ) from None
        if done.error is not None:
            raise done.error
        return done

    def _fail_waiting(self, error: ClientError) -> None:
        for request in self._tracker.lost():
            future = self._waiters.pop(request, None)
            if future is not None and not future.done():
                future.set_exception(error)
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()

    def _put(self, item: Item | ClientError | None) -> None:
        if self._inbox.full():
            self._inbox.get_nowait()  # a consumer that falls behind loses the oldest
            self.dropped += 1
        self._inbox.put_nowait(item)

    def _status(self, status: Status) -> None:
        if self.on_status is not None:
            try:
                self.on_status(status)
            except Exception:  # a faulty callback must not stop reconnecting
                log.exception("on_status callback failed")

    def _target(self, url: str) -> URL:
        """The upgrade URL: the token, or in open mode who this client says it is."""
        target = URL(url)
        if self.token:
            return target.update_query(token=self.token)
        who = {k: v for k, v in (("user", self.user), ("name", self.name)) if v is not None}
        # yarl percent-encodes them, `+` and `&` included.
        return target.update_query(who) if who else target

    async def _run(self) -> None:
        assert self._session is not None
        while not self._stopped():
            url = self.urls[self._url_index]
            reason = "closed"
            try:
                ws = await asyncio.wait_for(self._open(url), HANDSHAKE_TIMEOUT)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    await self._give_up(Unauthorized(url, exc.status))
                    return
                reason = f"HTTP {exc.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            else:
                reason = await self._serve(ws, url)
            if self._stopped():
                return
            delay = self.backoff.next()
            self._url_index = (self._url_index + 1) % len(self.urls)
            next_url = self.urls[self._url_index]
            log.info("%s: %s; next try %s in %.2f s", url, reason, next_url, delay)
            self._status(Disconnected(url, reason, delay, next_url))
            await asyncio.sleep(delay)

    async def _open(self, url: str) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        return await self._session.ws_connect(
            self._target(url),
            autoping=True,
            heartbeat=self.heartbeat,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> str:
        """Run one connection: rejoin, then read until it drops; return why it ended."""
        self._ws = ws
        self.url = url
        reader = asyncio.create_task(self._read(ws), name="chatclient-reader")
        try:
            if not await self._rejoin():
                return await reader if reader.done() else "rejoining failed"
            self.generation += 1
            self.backoff.reset()
            log.info("connected to %s (generation %d)", url, self.generation)
            self._status(Connected(url, self.generation, tuple(sorted(self.rooms))))
            await self._notify(ready=True)
            return await reader
        finally:
            self._ready = False  # at once: nothing may use the connection from here on
            self._ws = None
            self.connection_id = None
            await self._notify(ready=False)
            self._fail_waiting(ConnectionLost(f"connection to {url} lost"))
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            with contextlib.suppress(Exception):
                await ws.close()

    async def _rejoin(self) -> bool:
        rooms = sorted(self.rooms)
        if not rooms:
            return True
        results = await asyncio.gather(
            *(self._rejoin_one(room) for room in rooms), return_exceptions=True
        )
        ok = True
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, ChatError):
                # The edge refuses the room now (a new limit, a token that no
                # longer allows it): keep the rest rather than retry forever.
                log.warning("could not rejoin %r: %s", room, result)
                self.rooms.discard(room)
            elif isinstance(result, BaseException):
                ok = False
        return ok

    async def _rejoin_one(self, room: str) -> None:
        # Many rooms at once can exceed the edge's join rate: wait and ask again.
        for attempt in range(1, REJOIN_TRIES + 1):
            try:
                since = self._tracker.position(room)
                presence = room in self._presence
                await self._request(
                    Request.join(room, self._history.get(room), since, presence), wait=False
                )
                return
            except (RateLimited, Unavailable):
                if attempt == REJOIN_TRIES:
                    raise
                await asyncio.sleep(min(1.0, 0.1 * attempt))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    return f"connection error: {ws.exception()}"
            return f"closed by the edge (code {ws.close_code})"
        finally:
            self._fail_waiting(ConnectionLost("connection lost"))

    def _on_text(self, data: str) -> None:
        try:
            frame = decode_server_frame(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.debug("ignoring a frame this client does not understand: %.200s", data)
            return
        for event in self._tracker.receive(frame):
            match event:
                case Delivered(message):
                    self._put(message)
                case Noted(news):
                    self._put(news)
                case Done(request):
                    future = self._waiters.pop(request, None)
                    if future is not None and not future.done():
                        future.set_result(request)
                case Stray(error):
                    self._put(error)
        own = self._tracker.connection_id
        if own is not None and own != self.connection_id:
            self.connection_id = own
            self.connection_ids.add(own)

    async def _give_up(self, error: ClientError) -> None:
        log.error("giving up: %s", error)
        self._fatal = error
        self._fail_waiting(error)
        self._put(error)
        await self._notify(ready=False)


# `async with connect(urls) as client:` reads better than the class name; same object.
connect = ChatClient
