"""kill -9 of a broker with a store, under load, through the client library.

Senders send at a steady rate with msgIds while the broker is killed and
restarted at random moments (printed with their seed: `FAULT_SEED=n` runs the
same moments again). On the same store every acknowledged chat reaches every
member of its room once, in offset order, in the room's one epoch, and no
member is told to resync; with the store deleted the rooms start new epochs,
members are told so, and nothing hangs.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatclient import Ack, ChatClient, ChatDelivery, ClientError, Joined, Resynced
from chatclient.core import Request
from tests.support.procs import Cluster, wait_until

SEND_DEADLINE = 90.0  # seconds every send has to end (ack or failure): nothing hangs
LISTEN_DEADLINE = 30.0  # seconds after the last send for every room's end marker to arrive


class CountingClient(ChatClient):
    """The library's client, counting the attempts of each send by msgId (it resends
    with the same msgId after a drop or an `unavailable`)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(urls)
        self.attempts: Counter[str] = Counter()

    async def _request(self, request: Request, wait: bool = True) -> Request:
        if request.msg_id is not None:
            self.attempts[request.msg_id] += 1
        return await super()._request(request, wait)


@dataclass
class Send:
    room: str
    msg_id: str
    ack: Ack | None = None
    error: BaseException | None = None
    attempts: int = 0


@dataclass
class Listener:
    """One member of one room on one edge, and everything it was given."""

    room: str
    edge: int
    client: ChatClient
    joined: Joined | None = None
    chats: list[ChatDelivery] = field(default_factory=list)
    resyncs: list[Resynced] = field(default_factory=list)

    async def listen(self, end_marker: str) -> None:
        """Record chats and stream events until the room's end marker arrives."""
        async for item in self.client.events():
            if isinstance(item, Joined) and item.room_id == self.room:
                if self.joined is None:
                    self.joined = item
            elif isinstance(item, Resynced):
                self.resyncs.append(item)
            elif isinstance(item, ChatDelivery):
                self.chats.append(item)
                if item.msg_id == end_marker:
                    return


def end_marker(room: str) -> str:
    return f"end-{room}"


def all_live(cluster: Cluster) -> bool:
    return all(
        e.health()[0] == 200 and e.metrics()["chat_pending_rooms"] == 0 for e in cluster.edges
    )


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_until off the event loop: the clients keep running meanwhile."""
    await asyncio.to_thread(wait_until, predicate, timeout, what)


async def kill_and_restart(cluster: Cluster, before_restart: Callable[[], None] | None = None
                           ) -> float:
    """kill -9 the broker, start it again, wait for every edge's rooms to be live;
    the seconds from the kill until then."""
    assert cluster.broker is not None
    killed = time.monotonic()
    await asyncio.to_thread(cluster.broker.kill9)
    await until(lambda: all(e.health()[0] == 503 for e in cluster.edges), 10, "edges see it")
    if before_restart is not None:
        before_restart()
    cluster.start_broker()
    await until(lambda: all_live(cluster), 30, "every edge healthy, rooms live")
    return time.monotonic() - killed


class Load:
    """Senders on every edge (each with every URL, starting at a different one) and
    a listener per room per edge, all through chatclient."""

    def __init__(self, cluster: Cluster, rooms: list[str], senders_per_room: int) -> None:
        self.cluster = cluster
        self.rooms = rooms
        urls = cluster.urls()
        self.senders: list[tuple[str, CountingClient]] = []
        for i in range(len(rooms) * senders_per_room):
            first = i % len(urls)
            self.senders.append(
                (rooms[i % len(rooms)], CountingClient(urls[first:] + urls[:first]))
            )
        self.listeners = [
            Listener(room, e, ChatClient([url])) for room in rooms for e, url in enumerate(urls)
        ]
        self.sends: list[Send] = []

    async def start(self) -> None:
        clients: list[ChatClient] = [c for _, c in self.senders]
        clients += [listener.client for listener in self.listeners]
        await asyncio.gather(*(c.start() for c in clients))
        await asyncio.gather(*(c.join(room) for room, c in self.senders))
        await asyncio.gather(*(x.client.join(x.room) for x in self.listeners))

    async def close(self) -> None:
        clients: list[ChatClient] = [c for _, c in self.senders]
        clients += [listener.client for listener in self.listeners]
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    async def send_all(self, count: int, rate: float) -> None:
        """Every sender sends `count` chats, one every 1/rate s without waiting for
        acks; returns when every send has ended."""
        async def one(client: CountingClient, send: Send, text: str) -> None:
            try:
                send.ack = await client.send(send.room, text, msg_id=send.msg_id)
            except (ClientError, TimeoutError) as exc:
                send.error = exc
            send.attempts = client.attempts[send.msg_id]

        async def sender(n: int, room: str, client: CountingClient) -> None:
            tasks = []
            start = time.monotonic() + n / len(self.senders) / rate  # spread the senders
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                send = Send(room, f"s{n}-{i}")
                self.sends.append(send)
                tasks.append(asyncio.create_task(one(client, send, f"chat {i} of {n}")))
            await asyncio.gather(*tasks)

        await asyncio.wait_for(
            asyncio.gather(*(sender(n, r, c) for n, (r, c) in enumerate(self.senders))),
            SEND_DEADLINE,
        )

    async def finish(self) -> dict[str, Ack]:
        """Send each room's end marker once the senders are done, and collect every
        listener's record up to it: everything before it is delivered by then."""
        listening = [
            asyncio.create_task(x.listen(end_marker(x.room))) for x in self.listeners
        ]
        by_room = {room: client for room, client in self.senders}
        acks = await asyncio.gather(
            *(by_room[r].send(r, "end", msg_id=end_marker(r)) for r in self.rooms)
        )
        await asyncio.wait_for(asyncio.gather(*listening), LISTEN_DEADLINE)
        return dict(zip(self.rooms, acks, strict=True))

    def figures(self) -> dict[str, int]:
        acked = [s.ack for s in self.sends if s.ack is not None]
        tries = [s.attempts for s in self.sends if s.ack is not None]
        return {
            "sent": len(self.sends),
            "acked": len(acked),
            "acked first time": tries.count(1),
            "acked after a resend": sum(1 for n in tries if n > 1),
            "failed": sum(1 for s in self.sends if s.ack is None),
            "resent by the library": sum(c.resent for _, c in self.senders),
            "duplicate acks (dropped by dedupe)": sum(1 for a in acked if a.duplicate),
        }


def print_figures(title: str, load: Load, extra: dict[str, object]) -> None:
    print(f"\n{title}")
    for name, value in {**extra, **load.figures()}.items():
        print(f"  {name}: {value}")
    delivered = Counter[str]()
    for x in load.listeners:
        delivered[f"{x.room}@edge{x.edge}"] = len(x.chats)
    print("  delivered per listener (room@edge: chats, end marker included):")
    print("   ", " ".join(f"{k}={v}" for k, v in sorted(delivered.items())))
    errors = Counter(f"{type(s.error).__name__}: {s.error}" for s in load.sends if s.error)
    for error, n in errors.items():
        print(f"  failed {n} x {error}")


def seeded() -> tuple[int, random.Random]:
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(1 << 30))
    return seed, random.Random(seed)


async def test_acknowledged_chats_survive_three_kill9_under_load(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    rooms_n, senders_per_room, count, rate, kills = 10, 4, 150, 10.0, 3
    cluster = cluster_factory(
        edges=3, env={"CHAT_DATA_DIR": str(tmp_path / "data"), "CHAT_RATE_LIMIT": "0"}
    )
    seed, rng = seeded()
    rooms = [f"k9-{i}" for i in range(rooms_n)]
    load = Load(cluster, rooms, senders_per_room)
    await load.start()
    try:
        delays = [round(rng.uniform(0.5, 2.0), 2) for _ in range(kills)]
        print(f"\nFAULT_SEED={seed}: kill -9 after {delays} s (each after the last restart)")
        sending = asyncio.create_task(load.send_all(count, rate))
        downtimes = []
        for delay in delays:
            await asyncio.sleep(delay)  # the random moment of the next kill
            assert not sending.done(), "the senders ended before every kill: raise `count`"
            downtimes.append(round(await kill_and_restart(cluster), 2))
        await sending
        markers = await load.finish()
    finally:
        await load.close()

    print_figures(
        f"{kills} x kill -9 under load: {len(load.senders)} senders at {rate:g}/s in "
        f"{rooms_n} rooms, {len(load.listeners)} listeners",
        load, {"seed": seed, "seconds from kill to live": downtimes},
    )
    acked = {s.msg_id: s.ack for s in load.sends if s.ack is not None}
    failed = {s.msg_id for s in load.sends if s.ack is None}
    for x in load.listeners:
        where = f"{x.room} at edge {x.edge}"
        assert x.resyncs == [], f"{where}: resync {x.resyncs}"
        assert x.client.duplicates == 0, f"{where}: {x.client.duplicates} offsets repeated"
        assert x.joined is not None and x.joined.offset == 0, f"{where}: {x.joined}"
        epoch = x.joined.epoch
        # Offsets 1, 2, 3, ... up to the end marker, all in the epoch joined.
        assert [c.epoch for c in x.chats] == [epoch] * len(x.chats), where
        assert [c.offset for c in x.chats] == list(range(1, len(x.chats) + 1)), where
        assert x.chats[-1].offset == markers[x.room].offset, where
        ids = Counter(c.msg_id for c in x.chats)
        assert max(ids.values()) == 1, f"{where}: delivered twice: {ids.most_common(3)}"
        for chat in x.chats:
            assert chat.msg_id is not None, f"{where}: a chat without its msgId"
            if chat.msg_id in failed:
                continue  # sequenced, but its sender gave up before the ack: once at most
            ack = markers[x.room] if chat.msg_id == end_marker(x.room) else acked[chat.msg_id]
            # At the offset its ack named (a duplicate ack names the original's).
            assert (ack.room_id, ack.epoch, ack.offset) == (x.room, chat.epoch, chat.offset)
        room_acked = {m for m, a in acked.items() if a.room_id == x.room}
        missing = room_acked - set(ids)
        assert not missing, f"{where}: {len(missing)} acknowledged chats never delivered"
    # Every member of a room saw the same stream.
    for room in rooms:
        streams = {
            tuple((c.offset, c.msg_id) for c in x.chats) for x in load.listeners if x.room == room
        }
        assert len(streams) == 1, f"{room}: listeners disagree"


async def test_a_deleted_store_means_new_epochs_and_nothing_hangs(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    rooms_n, senders_per_room, count, rate = 3, 3, 60, 15.0
    data = tmp_path / "data"
    cluster = cluster_factory(edges=3, env={"CHAT_DATA_DIR": str(data), "CHAT_RATE_LIMIT": "0"})
    seed, rng = seeded()
    rooms = [f"gone-{i}" for i in range(rooms_n)]
    load = Load(cluster, rooms, senders_per_room)
    await load.start()
    try:
        delay = round(rng.uniform(1.0, 2.5), 2)  # within the senders' 4 s
        print(f"\nFAULT_SEED={seed}: kill -9 after {delay} s, store deleted")
        sending = asyncio.create_task(load.send_all(count, rate))
        await asyncio.sleep(delay)
        assert not sending.done()
        downtime = await kill_and_restart(cluster, lambda: shutil.rmtree(data))
        await sending  # within SEND_DEADLINE: every send ended, acked or failed
        markers = await load.finish()
    finally:
        await load.close()

    print_figures(
        f"kill -9 with the store deleted: {len(load.senders)} senders, "
        f"{len(load.listeners)} listeners", load,
        {"seed": seed, "seconds from kill to live": round(downtime, 2)},
    )
    for x in load.listeners:
        where = f"{x.room} at edge {x.edge}"
        assert x.joined is not None
        old = x.joined.epoch
        assert len(x.resyncs) == 1, f"{where}: {x.resyncs}"
        new = x.resyncs[0]
        assert new.epoch != old, where
        assert markers[x.room].epoch == new.epoch, where
        before = [c for c in x.chats if c.epoch == old]
        after = [c for c in x.chats if c.epoch == new.epoch]
        assert len(before) + len(after) == len(x.chats), f"{where}: a third epoch"
        assert x.chats[: len(before)] == before, f"{where}: the old epoch after the new one"
        # Within each epoch: contiguous, from the start (old) or from the resync (new).
        assert [c.offset for c in before] == list(range(1, len(before) + 1)), where
        first = new.offset + 1
        assert [c.offset for c in after] == list(range(first, first + len(after))), where
        assert after and after[-1].msg_id == end_marker(x.room), where
        # Every chat the new stream acknowledged is delivered, once, where its
        # ack said: the resync is to the new stream's start, whose first chats
        # are fetched from history when the edge learnt the epoch from a probe.
        assert new.offset == 0, f"{where}: resync to {new}, not to the stream's start"
        delivered = {c.msg_id: (c.epoch, c.offset) for c in after}
        assert len(delivered) == len(after), f"{where}: delivered twice"
        for s in load.sends:
            if s.room != x.room or s.ack is None or s.ack.epoch != new.epoch:
                continue
            assert delivered.get(s.msg_id) == (s.ack.epoch, s.ack.offset), (
                f"{where}: {s} not delivered; resync {new}, then "
                f"{[(c.offset, c.msg_id) for c in after[:5]]}"
            )
