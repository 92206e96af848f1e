"""`chat-client`: chat from a terminal, or from a script through a pipe.

    chat-client ws://127.0.0.1:8081 --room lobby --user alice --name Alice

`--user` and `--name` are who the edge says this connection is (open mode;
with `--token`, the token says it). Typed lines go to the current room (the
last one joined). Commands: `/join ROOM`, `/leave [ROOM]`, `/rooms`,
`/who [ROOM]`, `/quit`, `/help`; start a line with `//` to send text that
begins with `/`. Chat lines go to stdout as `HH:MM:SS [room] name: text`, and
between them, since rooms are joined with presence events, `HH:MM:SS [room]
* name joined` and `... * name left`; connection news and errors go to stderr.

With `--history K` each room joined shows its last K chats first. After a
reconnect it rejoins every room where it left off: nothing missed, nothing
twice; when the edge cannot recover what was missed, or a room's stream
restarted, it says so on stderr ("some messages may be missing").

At the end of input it waits until its own messages have come back through
the broker, then exits: 0 if everything was delivered, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Sequence

from chatclient.client import ChatClient, Connected, Disconnected, Status, connect
from chatclient.core import Joined, Listing, Member, PresenceJoin, PresenceLeave, Resynced
from chatclient.errors import ChatError, ClientError, ConnectionLost, RateLimited, Unavailable
from chatclient.roster import Roster
from chatconfig import ClientSettings, parse
from protocol.messages import ChatDelivery

RETRIES = 40  # sends refused as rate_limited or unavailable are retried this often
HELP = (
    "commands: /join ROOM, /leave [ROOM], /rooms, /who [ROOM], /quit, /help; "
    "//text sends /text"
)
# A room above the server's presence events limit: no join or leave lines for it.
QUIET = "{room} is too big for join and leave lines: /who {room} lists who is there now"


def clock(ts_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))


def describe(member: Member) -> str:
    """`Alice (alice): 2 connections`, or `bob: 1 connection` when the name is the user."""
    who = member.name if member.name == member.user else f"{member.name} ({member.user})"
    plural = "" if member.connections == 1 else "s"
    return f"{who}: {member.connections} connection{plural}"


def info(text: str) -> None:
    print(f"* {text}", file=sys.stderr, flush=True)


def problem(text: str) -> None:
    print(f"! {text}", file=sys.stderr, flush=True)


def on_status(status: Status) -> None:
    match status:
        case Connected(url, generation, rooms):
            again = "re" if generation > 1 else ""
            joined = f", in {', '.join(rooms)}" if rooms else ""
            info(f"{again}connected to {url}{joined}")
        case Disconnected(url, reason, retry_in, next_url):
            info(f"{url}: {reason}; trying {next_url} in {retry_in:.1f} s")


class Session:
    """What the terminal user sees and does, on top of one ChatClient."""

    def __init__(self, client: ChatClient, history: int = 0) -> None:
        self.client = client
        self.history = history
        self.current: str | None = None
        self.awaiting: set[str] = set()  # msgIds of own messages not yet seen back
        self.echoed = asyncio.Event()
        self.failures = 0
        self.roster = Roster()  # who is in each room: names for the leave lines
        self.tasks: set[asyncio.Task[None]] = set()

    def show(self, message: ChatDelivery) -> None:
        sender = message.name or message.sender  # an edge before names: the sender id
        text = message.message.replace("\r", "\\r").replace("\n", "\\n")
        print(f"{clock(message.ts)} [{message.room_id}] {sender}: {text}", flush=True)
        if message.msg_id is not None and message.msg_id in self.awaiting:
            self.awaiting.discard(message.msg_id)
            if not self.awaiting:
                self.echoed.set()

    def presence(self, event: PresenceJoin | PresenceLeave) -> None:
        if event.room_id not in self.client.rooms:
            return  # a room left, whose last events still arrive
        member = self.roster.apply(event)
        if event.user in self.client.connection_ids:
            return  # itself: "joined ROOM" said so already
        verb = "joined" if isinstance(event, PresenceJoin) else "left"
        print(f"{clock(int(time.time() * 1000))} [{event.room_id}] * {member.name} {verb}",
              flush=True)

    async def receive(self) -> None:
        while True:
            try:
                async for item in self.client.events():
                    match item:
                        case ChatDelivery():
                            self.show(item)
                        case PresenceJoin() | PresenceLeave():
                            self.presence(item)
                        case Joined(room_id=room, recovered=False):
                            problem(
                                f"rejoined {room} but could not recover what was missed: "
                                "some messages may be missing"
                            )
                        case Joined(room_id=room, recovered=True):
                            info(f"rejoined {room}; missed messages recovered")
                        case Resynced(room_id=room):
                            problem(f"{room} restarted its stream: some messages may be missing")
                return
            except ChatError as exc:
                problem(str(exc))
            except ClientError as exc:  # unauthorized: nothing more will come
                problem(str(exc))
                self.failures += 1
                return

    async def join(self, room: str) -> None:
        try:
            await self.client.join(room, history=self.history or None, presence=True)
        except ChatError as exc:
            problem(f"could not join {room}: {exc}")
            self.failures += 1
            return
        self.current = room
        info(f"joined {room}; typed lines go to {room}")
        # Who was there already: the names their leave lines will show.
        task = asyncio.create_task(self._learn(room), name=f"presence {room}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _learn(self, room: str) -> None:
        with contextlib.suppress(ClientError, TimeoutError):
            listed = await self.client.presence(room)
            if room in self.client.rooms:
                # Events handled meanwhile may be newer than the listing: they stay.
                known = {m.user: m for m in self.roster.members(room)}
                self.roster.load(room, Listing([*(m for m in listed if m.user not in known),
                                                *known.values()], listed.events))
                if not listed.events:
                    info(QUIET.format(room=room))

    async def who(self, room: str | None) -> None:
        room = room or self.current
        if room is None:
            problem("not in any room: /who ROOM")
            return
        try:
            members = await self.client.presence(room)
        except (ChatError, TimeoutError) as exc:
            problem(f"cannot list {room}: {exc or 'no answer'}")
            return
        if room in self.client.rooms:
            self.roster.load(room, members)
        plural = "" if len(members) == 1 else "s"
        info(f"in {room}: {len(members)} user{plural}")
        for member in members:
            info(f"  {describe(member)}")
        if not members.events:
            info(QUIET.format(room=room))

    async def leave(self, room: str | None) -> None:
        room = room or self.current
        if room is None:
            problem("not in any room")
            return
        try:
            await self.client.leave(room)
        except ChatError as exc:
            problem(f"could not leave {room}: {exc}")
            return
        info(f"left {room}")
        self.roster.forget(room)
        if self.current == room:
            self.current = max(self.client.rooms) if self.client.rooms else None
            if self.current is not None:
                info(f"typed lines go to {self.current}")

    def rooms(self) -> None:
        if not self.client.rooms:
            info("in no room")
            return
        listed = [f"{r} (current)" if r == self.current else r for r in sorted(self.client.rooms)]
        info("rooms: " + ", ".join(listed))

    async def say(self, text: str) -> None:
        room = self.current
        if room is None:
            problem("join a room first: /join ROOM")
            self.failures += 1
            return
        msg_id = uuid.uuid4().hex  # one id across retries: delivered at most once
        # Awaited from now: its copy may arrive before its ack.
        self.awaiting.add(msg_id)
        self.echoed.clear()
        for attempt in range(RETRIES):
            try:
                await self.client.send(room, text, msg_id=msg_id)
                return
            except (RateLimited, Unavailable):
                await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
            except ConnectionLost:
                self._forget(msg_id)
                problem(f"not sent to {room}: no connection to an edge for too long")
                self.failures += 1
                return
            except ChatError as exc:
                self._forget(msg_id)
                problem(f"not sent to {room}: {exc}")
                self.failures += 1
                return
        self._forget(msg_id)
        problem(f"not sent to {room}: still refused after {RETRIES} tries")
        self.failures += 1

    def _forget(self, msg_id: str) -> None:
        self.awaiting.discard(msg_id)
        if not self.awaiting:
            self.echoed.set()

    async def command(self, line: str) -> bool:
        """Handle one input line; False means quit."""
        if line.startswith("//"):
            await self.say(line[1:])
            return True
        if not line.startswith("/"):
            if line.strip():
                await self.say(line)
            return True
        verb, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        match verb:
            case "join" if arg:
                await self.join(arg)
            case "leave":
                await self.leave(arg or None)
            case "rooms":
                self.rooms()
            case "who":
                await self.who(arg or None)
            case "quit" | "exit":
                return False
            case "help":
                info(HELP)
            case _:
                problem(f"unknown command {line!r}; {HELP}")
        return True

    async def drain(self) -> bool:
        """Wait until every message we sent has come back to us; bound it with a timeout."""
        if self.awaiting:
            await self.echoed.wait()
        return True

    def missing(self) -> int:
        return len(self.awaiting)


class StdinLines:
    """Lines of stdin, read on the event loop itself: no thread.

    A thread blocked in a read of stdin holds the stdin buffer's lock, and
    when `/quit` ends the program while the pipe or terminal is still open,
    interpreter shutdown cannot take that lock and aborts. Here the loop
    watches the descriptor and reads only what is ready; nothing touches
    `sys.stdin`. The descriptor is left in blocking mode: a terminal's stdin
    usually shares its file description with stdout and stderr, which must
    stay blocking. Regular files (and /dev/null) cannot be watched, but never
    block either, so they are read directly.
    """

    CHUNK = 65536

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.partial = bytearray()
        self.loop = asyncio.get_running_loop()
        self.watching = False
        self.done = False
        try:
            self.loop.add_reader(fd, self._readable)
            self.watching = True
        except (PermissionError, NotImplementedError):
            pass

    async def get(self) -> str | None:
        """The next line without its line ending; None at the end of input."""
        while not self.watching and self.lines.empty() and not self.done:
            self._feed(self._read() or b"")
        return await self.lines.get()

    def close(self) -> None:
        """Stop reading; whatever is still unread stays in the pipe or terminal."""
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False
        self.done = True

    def _read(self) -> bytes | None:
        """What is ready (b"" at the end of input), or None when nothing is."""
        try:
            return os.read(self.fd, self.CHUNK)
        except BlockingIOError:  # a parent left the descriptor non-blocking
            return None
        except OSError:  # EIO: the terminal went away; treat as the end of input
            return b""

    def _readable(self) -> None:
        if (data := self._read()) is not None:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self.done:
            return
        if not data:
            if self.partial:
                self._put(bytes(self.partial))
                self.partial.clear()
            self.lines.put_nowait(None)
            self.close()
            return
        self.partial += data
        *complete, rest = self.partial.split(b"\n")
        self.partial[:] = rest
        for raw in complete:
            self._put(raw)

    def _put(self, raw: bytes | bytearray) -> None:
        self.lines.put_nowait(raw.decode("utf-8", "replace").rstrip("\r"))


async def run(args: ClientSettings) -> int:
    client = connect(
        args.urls, token=args.token, user=args.user or None, name=args.display_name or None,
        connect_timeout=args.connect_timeout, on_status=on_status,
    )
    try:
        await client.start()
    except (ConnectionError, ClientError) as exc:
        problem(str(exc))
        return 1
    async with client:
        session = Session(client, args.history)
        receiver = asyncio.create_task(session.receive(), name="receive")
        for room in args.room:
            await session.join(room)
        lines = StdinLines(sys.stdin.fileno())
        try:
            while (line := await lines.get()) is not None:
                if not await session.command(line):
                    break
        finally:
            lines.close()
        delivered = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.echo_timeout):
                delivered = await session.drain()
        if not delivered:
            problem(
                f"{session.missing()} sent message(s) did not come back "
                f"within {args.echo_timeout:g} s"
            )
        for task in (receiver, *session.tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return 0 if delivered and not session.failures else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(
        ClientSettings, argv, prog="chat-client",
        description="Chat in roomcast rooms from a terminal or a script. " + HELP,
    )
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
