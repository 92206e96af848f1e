"""What one generator process does with its share: connect, join, send, count.

Every mode first connects and joins (not measured), then runs after the
parent says go. `Traffic` covers the fan-out (closed loop: a sender may have
`window` messages not yet acknowledged, where acknowledged means every member
of the room got it) and the rate mode (open loop: each sender on a fixed
schedule, late or not). `Idle` only holds its connections. `Churn` cycles
connect, join, chat, leave, disconnect against rooms kept alive by anchors;
with `presence`, each of its clients is a user of its own and asks for the
room's presence events.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
import time
from typing import Any

import aiohttp

from bench.clients import Conn, OnChat, as_user, open_conn
from bench.ledger import Ledger, Member
from bench.payload import Stamp, encode_stamp
from bench.plan import Share
from bench.stats import Histogram

CLOSE_TIMEOUT = 10.0
CHURN_ECHO_TIMEOUT = 5.0


class Workload(abc.ABC):
    """Counters and acknowledgements shared by every mode."""

    def __init__(self, share: Share, session: aiohttp.ClientSession) -> None:
        self.share = share
        self.session = session
        self.ledger = Ledger()
        self.conns: list[Conn] = []
        self.sent = 0
        self.expected = 0
        self.failures = 0  # requests that failed or timed out on the generator side
        # (sender, seq) -> deliveries still due; gone once every member has it.
        # What is left at the end is the loss.
        self.pending: dict[tuple[int, int], int] = {}
        self.windows: dict[int, asyncio.Semaphore] = {}
        self.stopping = False
        self.drained = asyncio.Event()
        self.started = 0.0
        self.finished = 0.0
        self.extra: dict[str, Any] = {}

    def acknowledge(self, stamp: Stamp) -> None:
        key = (stamp.sender, stamp.seq)
        left = self.pending.get(key)
        if left is None:
            return  # a duplicate, or a message the run did not expect
        if left > 1:
            self.pending[key] = left - 1
            return
        del self.pending[key]
        window = self.windows.get(stamp.sender)
        if window is not None:
            window.release()
        if self.stopping and not self.pending:
            self.drained.set()

    def member_handler(self, member: Member) -> OnChat:
        deliver = self.ledger.deliver
        acknowledge = self.acknowledge
        clock = time.monotonic_ns

        def on_chat(room_id: str, message: str) -> None:
            stamp = deliver(member, room_id, message, clock())
            if stamp is not None:
                acknowledge(stamp)

        return on_chat

    def expect(self, sender: int, seq: int, deliveries: int) -> None:
        self.pending[(sender, seq)] = deliveries
        self.expected += deliveries
        self.sent += 1

    async def join_member(self, room: int, index: int, user: str | None = None) -> Conn:
        """A member of `room`; with `user`, connected as that user and asking for presence."""
        share = self.share
        member = Member(share.room_id(room), room)
        url = share.url_of(room, index)
        if user is not None:
            url = as_user(url, user, user)
        conn = await open_conn(share.transport, self.session, url, self.member_handler(member))
        self.conns.append(conn)
        await conn.join(member.room_id, presence=user is not None)
        return conn

    @abc.abstractmethod
    async def setup(self) -> None: ...

    @abc.abstractmethod
    async def run(self) -> None: ...

    async def drain(self) -> None:
        self.stopping = True
        if self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), self.share.drain)
        self.finished = time.monotonic()

    def progress(self) -> dict[str, Any]:
        return {"sent": self.sent, "received": self.ledger.received}

    def result(self) -> dict[str, Any]:
        ledger = self.ledger
        return {
            "sent": self.sent,
            "expected": self.expected,
            "received": ledger.received,
            "missing": sum(self.pending.values()),
            "leaks": ledger.leaks,
            "order_violations": ledger.order_violations,
            "duplicates": ledger.duplicates,
            "errors": sum(c.errors for c in self.conns) + self.failures,
            "latency": ledger.latency.to_json(),
            "started": self.started,
            "finished": self.finished,
            "connections": len(self.conns),
            "extra": self.extra,
        }

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.close() for c in self.conns), return_exceptions=True),
                CLOSE_TIMEOUT,
            )


async def _bounded(limit: int, jobs: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


class Traffic(Workload):
    """Rooms of members with senders: closed loop ("fanout") or fixed rate ("rate")."""

    def __init__(self, share: Share, session: aiohttp.ClientSession) -> None:
        super().__init__(share, session)
        self.senders: list[tuple[int, int, Conn]] = []  # (sender id, room, connection)

    async def setup(self) -> None:
        share = self.share
        jobs = [self.join_member(r, j) for r in share.rooms for j in range(share.members)]
        conns = await _bounded(share.connect_concurrency, jobs)
        for n, conn in enumerate(conns):
            room, j = share.rooms[n // share.members], n % share.members
            if j < share.senders:
                self.senders.append((share.sender_id(room, j), room, conn))

    async def run(self) -> None:
        share = self.share
        self.started = time.monotonic()
        start_ns = time.monotonic_ns()
        end_ns = start_ns + int(share.duration * 1e9)
        self.ledger.latency_from_ns = start_ns + int(share.warmup * 1e9)
        if share.mode == "fanout":
            jobs = [self._closed_loop(s, r, c, end_ns) for s, r, c in self.senders]
        else:
            jobs = [self._open_loop(s, r, c, start_ns, end_ns) for s, r, c in self.senders]
        tasks = [asyncio.create_task(j) for j in jobs]
        if tasks:
            # A closed-loop sender whose window never reopens (loss) waits forever: cut it.
            _, late = await asyncio.wait(tasks, timeout=share.duration + 1.0)
            for task in late:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.failures += sum(
                1 for r in results
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
            )
        await self.drain()

    async def _closed_loop(self, sender: int, room: int, conn: Conn, end_ns: int) -> None:
        window = self.windows[sender] = asyncio.Semaphore(self.share.window)
        room_id, size, members = self.share.room_id(room), self.share.size, self.share.members
        clock = time.monotonic_ns
        seq = 0
        while True:
            await window.acquire()
            now = clock()
            if now >= end_ns:
                return
            seq += 1
            self.expect(sender, seq, members)
            await conn.chat(room_id, encode_stamp(Stamp(room, sender, seq, now), size))

    async def _open_loop(
        self, sender: int, room: int, conn: Conn, start_ns: int, end_ns: int
    ) -> None:
        share = self.share
        interval = int(1e9 / share.rate)
        room_id, size, members = share.room_id(room), share.size, share.members
        clock = time.monotonic_ns
        # Random phases, so that senders do not fire in lockstep.
        due = start_ns + random.randrange(max(1, interval))
        seq = 0
        while due < end_ns:
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            seq += 1
            self.expect(sender, seq, members)
            # Stamped with the time it was due, not the time it went out.
            await conn.chat(room_id, encode_stamp(Stamp(room, sender, seq, due), size))
            due += interval


class Idle(Workload):
    """Connections that join a room and then only stay connected."""

    async def setup(self) -> None:
        share = self.share
        jobs = [self.join_member(r, j) for r in share.rooms for j in range(share.members)]
        await _bounded(share.connect_concurrency, jobs)

    async def run(self) -> None:
        self.started = self.finished = time.monotonic()


class Churn(Workload):
    """Connect, join, chat, wait for the echo, leave, disconnect; again and again.

    One anchor per room stays joined throughout, so each chat is due twice
    (the churner's own echo and the anchor's copy) and the rooms stay open.
    Chats from other churners in the same room are checked for leaks only;
    anything that reaches a churner after its leave was confirmed is a leak.
    With `presence`, every anchor and churner is a user of its own, so each
    cycle is one presence_join and one presence_leave in its room; the events
    that reach anchors and churners are counted.
    """

    def __init__(self, share: Share, session: aiohttp.ClientSession) -> None:
        super().__init__(share, session)
        self.cycles = 0
        self.cycle_time = Histogram()
        self.churner_presence_events = 0  # from churners' connections, closed each cycle

    def _user(self, who: str) -> str | None:
        return f"{self.share.prefix}{who}" if self.share.presence else None

    async def setup(self) -> None:
        anchors = [self.join_member(r, 0, self._user(f"anchor-{r}")) for r in self.share.rooms]
        await _bounded(self.share.connect_concurrency, anchors)

    async def run(self) -> None:
        share = self.share
        self.started = time.monotonic()
        end = self.started + share.duration
        churners = [
            self._churner(share.sender_id(room, k), room, end)
            for k in range(share.senders)
            for room in share.rooms
        ]
        await asyncio.gather(*churners)
        elapsed = time.monotonic() - self.started
        await self.drain()
        self.extra = {
            "cycles": self.cycles,
            "elapsed_s": elapsed,
            "cycle_hist": self.cycle_time.to_json(),
            "presence_events": self.churner_presence_events
            + sum(c.presence_events for c in self.conns),
        }

    async def _churner(self, sender: int, room: int, end: float) -> None:
        share = self.share
        room_id = share.room_id(room)
        user = self._user(f"churner-{sender}")
        seq = 0
        turn = sender
        while time.monotonic() < end:
            seq += 1
            turn += 1
            began = time.monotonic_ns()
            url = share.urls[turn % len(share.urls)]
            try:
                await self._cycle(sender, room, room_id, seq,
                                  url if user is None else as_user(url, user, user), user)
            except Exception:  # refused, reset, timed out: counted, and the loop goes on
                self.failures += 1
                await asyncio.sleep(0.05)  # back off a refusing server instead of spinning
                continue
            self.cycles += 1
            self.cycle_time.record((time.monotonic_ns() - began) / 1000.0)

    async def _cycle(self, sender: int, room: int, room_id: str, seq: int, url: str,
                     user: str | None) -> None:
        member = Member(room_id, room)
        echo: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ledger, clock = self.ledger, time.monotonic_ns

        def on_chat(got_room: str, message: str) -> None:
            stamp = ledger.check(member, got_room, message)
            if stamp is None or stamp.sender != sender or stamp.seq != seq:
                # A leak (counted), or a chat due to others: another churner's, or
                # this churner's previous one, still on its way when this
                # connection joined.
                return
            if ledger.accept(member, stamp, clock()):
                self.acknowledge(stamp)
            if not echo.done():
                echo.set_result(None)

        conn = await open_conn(self.share.transport, self.session, url, on_chat)
        try:
            await conn.join(room_id, presence=user is not None)
            self.expect(sender, seq, 2)
            message = encode_stamp(Stamp(room, sender, seq, clock()), self.share.size)
            await conn.chat(room_id, message)
            await asyncio.wait_for(echo, CHURN_ECHO_TIMEOUT)
            await conn.leave(room_id)
            member.left = True
        finally:
            self.failures += conn.errors
            self.churner_presence_events += conn.presence_events
            await conn.close()


def make_workload(share: Share, session: aiohttp.ClientSession) -> Workload:
    if share.mode in ("fanout", "rate"):
        return Traffic(share, session)
    if share.mode == "idle":
        return Idle(share, session)
    return Churn(share, session)
