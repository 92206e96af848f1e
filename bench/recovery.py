"""`chat-bench recovery`: members cut mid-stream and back on another edge with `since`.

Against ours (one broker, three edges): per room one sender sends chats at a
fixed rate over the whole run; every member joins on some edge and, at
moments spread over the run, loses its connection, alternately abruptly (a
TCP reset, no close handshake) and by a close handshake, stays away for
`gap` seconds while the room goes on, then connects to the next edge and
rejoins with `since` set to the last (epoch, offset) it saw (protocol v2
section 4). Once the senders stop and every member has caught up to the
room's last offset (or a timeout passed), each member's stream is checked
(`bench.streamtrack`): chats missed and chats received twice must both be 0.
The time to recover is from opening the new connection to the first chat
after `since` arriving on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.clients import StreamConn
from bench.servers import ServerSet
from bench.streamtrack import Track, percentile
from protocol.messages import ChatDelivery

CATCH_UP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RecoveryParams:
    rooms: int = 4
    members: int = 6  # per room
    rate: float = 100.0  # chats/s per room
    duration: float = 6.0
    cuts: int = 2  # per member
    gap: float = 0.2  # seconds away before reconnecting
    size: int = 64


@dataclass(slots=True)
class Member:
    name: str
    room: str
    edge: int
    track: Track
    changed: asyncio.Event
    conn: StreamConn | None = None
    cuts_abrupt: int = 0
    cuts_closed: int = 0
    errors: int = 0

    def on_delivery(self, body: ChatDelivery) -> None:
        self.track.chat(body.epoch, body.offset, time.monotonic())
        self.changed.set()


class Sender:
    def __init__(self, room: str, changed: asyncio.Event) -> None:
        self.room = room
        self.changed = changed
        self.top = 0  # the highest offset of the room seen on its own copies
        self.epoch: str | None = None
        self.sent = 0
        self.conn: StreamConn | None = None

    def on_delivery(self, body: ChatDelivery) -> None:
        if body.offset is not None and body.offset > self.top:
            self.top, self.epoch = body.offset, body.epoch
        self.changed.set()


async def _open_member(m: Member, url: str,
                       since: tuple[str, int] | None = None) -> None:
    conn = await StreamConn.open_stream(url, m.on_delivery)
    m.conn = conn
    joined = await conn.join_stream(m.room, since=since)
    m.track.joined(joined.epoch, joined.offset, joined.recovered, time.monotonic())


async def _send_loop(s: Sender, params: RecoveryParams, go: float) -> None:
    assert s.conn is not None
    text = "r" * params.size
    interval = 1.0 / params.rate
    count = int(params.duration * params.rate)
    for n in range(count):
        due = go + n * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await s.conn.chat(s.room, text)
        s.sent += 1


async def _cut_loop(m: Member, urls: list[str], params: RecoveryParams, go: float,
                    index: int) -> None:
    """Cut this member `cuts` times, at moments spread over the middle of the run."""
    span = params.duration * 0.7
    for k in range(params.cuts):
        # Members of a room are cut at different moments; abrupt and closed alternate.
        frac = (k + (index % max(1, params.members)) / max(1, params.members)) / params.cuts
        due = go + params.duration * 0.1 + span * frac
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        abrupt = (k + index) % 2 == 0
        conn = m.conn
        assert conn is not None
        m.errors += conn.errors
        if abrupt:
            conn.abort()
            m.cuts_abrupt += 1
        else:
            await conn.close()
            m.cuts_closed += 1
        await asyncio.sleep(params.gap)
        m.edge = (m.edge + 1) % len(urls)
        since = m.track.reconnecting(time.monotonic(), abrupt)
        await _open_member(m, urls[m.edge], since)


async def _until(changed: asyncio.Event, done: Callable[[], bool]) -> None:
    """Wait for `done()`, checked each time a chat has arrived anywhere."""
    while not done():
        changed.clear()
        await changed.wait()


async def _caught_up(members: list[Member], senders: dict[str, Sender],
                     changed: asyncio.Event) -> bool:
    """The senders have seen their own last chats, and every member the room's last."""
    try:
        async with asyncio.timeout(CATCH_UP_TIMEOUT):
            await _until(changed, lambda: all(s.top >= s.sent for s in senders.values()))
            await _until(changed, lambda: all(m.track.last >= senders[m.room].top
                                              for m in members))
    except TimeoutError:
        return False
    return True


async def run(params: RecoveryParams, servers: ServerSet, label: str) -> dict[str, Any]:
    urls = list(servers.urls)
    rooms = [f"rec-{label}-{n}" for n in range(params.rooms)]
    changed = asyncio.Event()
    senders = {room: Sender(room, changed) for room in rooms}
    members: list[Member] = []
    try:
        for r, room in enumerate(rooms):
            s = senders[room]
            s.conn = await StreamConn.open_stream(urls[r % len(urls)], s.on_delivery)
            await s.conn.join_stream(room)
            for j in range(params.members):
                m = Member(f"{room}/m{j}", room, (r + j) % len(urls), Track(), changed)
                await _open_member(m, urls[m.edge])
                members.append(m)
        go = time.monotonic() + 0.2
        tasks = [_send_loop(s, params, go) for s in senders.values()]
        tasks += [_cut_loop(m, urls, params, go, i) for i, m in enumerate(members)]
        await asyncio.gather(*tasks)
        # The senders' own copies tell the room's last offset.
        caught_up = await _caught_up(members, senders, changed)
    finally:
        conns = [m.conn for m in members] + [s.conn for s in senders.values()]
        for conn in conns:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
    return summarize(params, members, senders, caught_up, servers.description, servers.name)


def summarize(params: RecoveryParams, members: list[Member], senders: dict[str, Sender],
              caught_up: bool, description: str, server: str = "ours") -> dict[str, Any]:
    clients = []
    recover: list[float] = []
    rejoin: list[float] = []
    for m in members:
        t = m.track
        final = senders[m.room].top
        for rec in t.reconnects:
            if rec.recover_s is not None:
                recover.append(rec.recover_s)
            if rec.joined_at is not None:
                rejoin.append(rec.joined_at - rec.began)
        clients.append({
            "client": m.name, "cuts_abrupt": m.cuts_abrupt, "cuts_closed": m.cuts_closed,
            "rejoins": len(t.reconnects),
            "not_recovered": t.not_recovered(),
            "replayed": sum(r.missed_while_away for r in t.reconnects),
            "received": sum(t.seen.values()),
            "expected": final - t.start,
            "missed": t.missed(final),
            "duplicated": t.duplicated(),
            "other_epoch": t.foreign,
            "errors": m.errors + (m.conn.errors if m.conn is not None else 0),
        })
    ms = [1000 * v for v in recover]
    rj = [1000 * v for v in rejoin]
    return {
        "workload": "recovery", "server": server, "design": description,
        "params": asdict(params),
        "sent": sum(s.sent for s in senders.values()),
        "final_offsets": {room: s.top for room, s in senders.items()},
        "caught_up": caught_up,
        "reconnects": sum(c["rejoins"] for c in clients),
        "recover_ms": {"p50": percentile(ms, 50), "p99": percentile(ms, 99),
                       "max": max(ms) if ms else None, "count": len(ms)},
        "rejoin_ms": {"p50": percentile(rj, 50), "p99": percentile(rj, 99)},
        "missed": sum(c["missed"] for c in clients),
        "duplicated": sum(c["duplicated"] for c in clients),
        "not_recovered": sum(c["not_recovered"] for c in clients),
        "clients": clients,
    }


def failures(result: dict[str, Any]) -> list[str]:
    out = []
    for key in ("missed", "duplicated", "not_recovered"):
        if result[key]:
            out.append(f"{key} = {result[key]}")
    if not result["caught_up"]:
        out.append("some members never reached the room's last offset")
    if not result["reconnects"]:
        out.append("no reconnect happened")
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    rec, rj = result["recover_ms"], result["rejoin_ms"]
    lines = [
        f"Parameters: rooms={p['rooms']}, members={p['members']}, rate={p['rate']:g} chats/s "
        f"per room, duration={p['duration']:g} s, cuts={p['cuts']} per member, "
        f"gap={p['gap']:g} s",
        "",
        f"sent {result['sent']:,}; {result['reconnects']} reconnects; recover p50 "
        f"{_ms(rec['p50'])} ms, p99 {_ms(rec['p99'])} ms, max {_ms(rec['max'])} ms "
        f"(rejoin answered p50 {_ms(rj['p50'])} ms, p99 {_ms(rj['p99'])} ms); "
        f"missed {result['missed']}, duplicated {result['duplicated']}, "
        f"not recovered {result['not_recovered']}",
        "",
        "| client | cuts abrupt | cuts by close | rejoins | not recovered | replayed "
        "| received | expected | missed | duplicated | other epoch | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["clients"]:
        lines.append(
            f"| {c['client']} | {c['cuts_abrupt']} | {c['cuts_closed']} | {c['rejoins']} "
            f"| {c['not_recovered']} | {c['replayed']} | {c['received']:,} "
            f"| {c['expected']:,} | {c['missed']} | {c['duplicated']} | {c['other_epoch']} "
            f"| {c['errors']} |"
        )
    return "\n".join(lines)
