"""Sans-I/O WebSocket cores side by side: the edge's own, websockets, wsproto.

    python -m bench.wscores                      the table (about two minutes)
    python -m bench.wscores --connections 1000 --rounds 3

Three things decide whether the edge could hold a library's connection object
instead of its own `protocol.websocket.ServerConnection`:

- memory per connection: N cores after a completed handshake, each having
  received one join frame, held in the edge's `Connection` shell as the edge
  holds its own core. Measured with tracemalloc and, separately, as the RSS
  growth of a fresh process (one process per core and method, so one core's
  arenas and caches never count against another's);
- CPU per delivery: one chat (~150 bytes of JSON) to every member of a room of
  1,000, either through the core (`send_text()` + `data_to_send()` per
  connection) or as one pre-built frame written to every transport, which is
  how the edge sends today;
- CPU per received frame: one masked ~100-byte text frame in, one text
  message event out.

A core is a `Core` subclass registered in `CANDIDATES`. A connection object
in the websockets mould (`receive_data()`, `events_received()`,
`send_text()`, `data_to_send()`, a `state`) needs no subclass: one line in
`CANDIDATES` measures it.

CPU is the process's CPU time, interleaved: every core once per round, the
first one rotating, several rounds. A ratio is the median over rounds of two
cores' times in the same round, so load that comes and goes on a shared
machine cancels out of it. The garbage collector is off while a timing runs.
Delivery ratios are against the edge's own way of delivering: one shared
frame. The stand-in transport's `write` (a Python method) costs the same for
every core; a real `transport.write` (a send syscall) would add a fixed cost
to every delivery and shrink the delivery ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar, cast

import websockets.frames
import websockets.http11
import websockets.protocol
import websockets.server
import wsproto
import wsproto.connection
import wsproto.events

from edge.connection import Connection, Lifecycle, Receiver
from edge.session import Client
from protocol.codec import encode_chat, encode_chat_request, encode_join
from protocol.frames import masked_frame, text_frame
from protocol.websocket import OP_TEXT, ServerConnection, TextMessage

MAX_FRAME = 64 * 1024  # the edge's default max_frame_bytes, given to every core that has a limit
MEMBERS = 1_000
CONNECTIONS = 10_000
ROUNDS = 7
MASK = b"\x37\xfa\x21\x3d"
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\n"
    b"Host: edge.example:8080\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Origin: https://edge.example\r\n"
    b"\r\n"
)
JOIN_FRAME = masked_frame(OP_TEXT, encode_join("lobby"), mask=MASK)
# A chat as the broker hands it to an edge, and a chat as a client sends it.
CHAT_BODY = encode_chat(
    "lobby", "Meet at the north entrance at half past six; bring the tickets.",
    "k3v9x2.000183", "u-4821", 1_764_000_000_123,
)
CLIENT_FRAME = masked_frame(
    OP_TEXT, encode_chat_request("Running ten minutes late, save me a seat near the door"),
    mask=MASK,
)

T = TypeVar("T")


class Transport:
    """Stands in for the connection's transport: counts what was written."""

    __slots__ = ("last", "writes", "written")

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1
        self.last = data

    def get_write_buffer_size(self) -> int:
        return 0


# Connection only stores where its events go; nothing here calls them.
_NO_RECEIVER = cast(Receiver, object())
_NO_LIFECYCLE = cast(Lifecycle, object())


def shell(core: object, conn_id: str, transport: Transport) -> Connection:
    """The edge's per-connection protocol object, holding `core` where it holds its own."""
    # A library's connection object would sit in the slot the edge's core takes.
    return Connection(
        Client(conn_id, None, None), cast(asyncio.Transport, transport),
        cast(ServerConnection, core), _NO_RECEIVER, _NO_LIFECYCLE, 1 << 20,
    )


class Core(ABC, Generic[T]):
    """One WebSocket core: how to get it open, feed it, and send through it."""

    name: str
    note: str = ""

    @abstractmethod
    def open(self) -> T:
        """A server-side core after a completed opening handshake."""

    @abstractmethod
    def receive(self, core: T, data: bytes) -> int:
        """Feed bytes from the client; the number of text messages that came out."""

    @abstractmethod
    def send_each(self, conns: Sequence[Connection], body: bytes) -> None:
        """Deliver `body` as a text message through every connection's own core."""

    @abstractmethod
    def send_shared(self, conns: Sequence[Connection], body: bytes) -> None:
        """Build one frame and write it to every connection the core says is open."""


class Own(Core[ServerConnection]):
    """The edge: a `ServerConnection` per connection, frames built once and shared."""

    name = "own"

    def open(self) -> ServerConnection:
        return ServerConnection(MAX_FRAME)  # the front door answered the handshake already

    def receive(self, core: ServerConnection, data: bytes) -> int:
        n = 0
        for event in core.receive_data(data):
            if type(event) is TextMessage:
                n += 1
        return n

    def send_each(self, conns: Sequence[Connection], body: bytes) -> None:
        for conn in conns:  # not what the edge does: a frame built per connection
            if conn.ws.can_send():
                conn.transport.write(text_frame(body))

    def send_shared(self, conns: Sequence[Connection], body: bytes) -> None:
        frame = text_frame(body)
        for conn in conns:  # edge.fanout: one frame, the same bytes to every member
            if conn.ws.can_send():  # the check Connection.send makes
                conn.transport.write(frame)


class SansIO(Core[Any]):
    """Any connection object in the websockets mould, made by `factory` in OPEN state.

    `is_text` picks the text-message events out of `events_received()`;
    `open_state` is the value of `state` while data may be sent.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[[], Any],
        is_text: Callable[[Any], bool],
        open_state: object,
        note: str = "",
    ) -> None:
        self.name = name
        self.factory = factory
        self.is_text = is_text
        self.open_state = open_state
        self.note = note

    def open(self) -> Any:
        return self.factory()

    def receive(self, core: Any, data: bytes) -> int:
        core.receive_data(data)
        is_text = self.is_text
        n = 0
        for event in core.events_received():
            if is_text(event):
                n += 1
        return n

    def send_each(self, conns: Sequence[Connection], body: bytes) -> None:
        for conn in conns:
            core: Any = conn.ws
            core.send_text(body)
            transport = conn.transport
            for data in core.data_to_send():
                transport.write(data)

    def send_shared(self, conns: Sequence[Connection], body: bytes) -> None:
        frame = text_frame(body)
        open_state = self.open_state
        for conn in conns:
            core: Any = conn.ws  # an annotation, not a cast(): no call in the loop
            if core.state is open_state:
                conn.transport.write(frame)


WS_OPEN = websockets.protocol.State.OPEN
WS_TEXT = websockets.frames.Opcode.TEXT


def _ws_is_text(event: object) -> bool:
    return isinstance(event, websockets.frames.Frame) and event.opcode is WS_TEXT


def _ws_handshake() -> websockets.server.ServerProtocol:
    core = websockets.server.ServerProtocol(max_size=MAX_FRAME)
    core.receive_data(HANDSHAKE)
    [request] = core.events_received()
    assert isinstance(request, websockets.http11.Request)
    core.send_response(core.accept(request))
    core.data_to_send()
    assert core.state is WS_OPEN, core.handshake_exc
    return core


def _ws_open() -> websockets.server.ServerProtocol:
    return websockets.server.ServerProtocol(state=WS_OPEN, max_size=MAX_FRAME)


class Wsproto(Core[Any]):
    """wsproto: `send()` returns bytes; text goes in as `str` and comes out decoded."""

    def __init__(self, name: str, factory: Callable[[], Any], note: str = "") -> None:
        self.name = name
        self.factory = factory
        self.note = note

    def open(self) -> Any:
        return self.factory()

    def receive(self, core: Any, data: bytes) -> int:
        core.receive_data(data)
        n = 0
        for event in core.events():
            if type(event) is wsproto.events.TextMessage:
                n += 1
        return n

    def send_each(self, conns: Sequence[Connection], body: bytes) -> None:
        message = wsproto.events.TextMessage(data=body.decode())  # one event, reused
        for conn in conns:
            core: Any = conn.ws
            conn.transport.write(core.send(message))

    def send_shared(self, conns: Sequence[Connection], body: bytes) -> None:
        frame = text_frame(body)
        for conn in conns:
            core: Any = conn.ws
            if core.state is WSPROTO_OPEN:
                conn.transport.write(frame)


WSPROTO_OPEN = wsproto.connection.ConnectionState.OPEN


def _wsproto_handshake() -> wsproto.WSConnection:
    core = wsproto.WSConnection(wsproto.connection.ConnectionType.SERVER)
    core.receive_data(HANDSHAKE)
    [request] = core.events()
    assert isinstance(request, wsproto.events.Request)
    core.send(wsproto.events.AcceptConnection())
    assert core.state is WSPROTO_OPEN
    return core


def _wsproto_open() -> wsproto.connection.Connection:
    return wsproto.connection.Connection(wsproto.connection.ConnectionType.SERVER)


CANDIDATES: tuple[Core[Any], ...] = (
    Own(),
    SansIO(
        "websockets", _ws_handshake, _ws_is_text, WS_OPEN,
        "ServerProtocol through receive_data(request), accept(), send_response()",
    ),
    SansIO(
        "websockets-open", _ws_open, _ws_is_text, WS_OPEN,
        "ServerProtocol(state=OPEN) after the edge's own handshake",
    ),
    Wsproto(
        "wsproto", _wsproto_handshake,
        "WSConnection(SERVER) through its h11 handshake (which it keeps)",
    ),
    Wsproto(
        "wsproto-open", _wsproto_open,
        "wsproto.connection.Connection(SERVER) after the edge's own handshake",
    ),
)


def candidate(name: str) -> Core[Any]:
    for core in CANDIDATES:
        if core.name == name:
            return core
    raise KeyError(f"no core named {name!r}: {', '.join(c.name for c in CANDIDATES)}")


# Memory: one fresh process per core and method.


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_in_this_process(name: str, count: int, method: str) -> dict[str, float]:
    """Build `count` joined connections of core `name`; bytes each, by `method`.

    `tracemalloc` gives the core alone and the core in its shell; `rss` the
    growth of the process's resident set (no tracemalloc running), shell
    included. The transport and the hub are one shared object each: they are
    the same whatever the core, and not part of it.
    """
    core = candidate(name)
    transport = Transport()
    warm = core.open()  # first-use caches (loggers, codecs, enums) are not per connection
    assert core.receive(warm, JOIN_FRAME) == 1
    shell(warm, "warm", transport)
    cores: list[Any] = [None] * count
    shells: list[Any] = [None] * count
    joined = 0
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
    for i in range(count):
        c = core.open()
        joined += core.receive(c, JOIN_FRAME)
        cores[i] = c
    gc.collect()
    if method == "tracemalloc":
        bare = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            shells[i] = shell(cores[i], f"k3v9x2.{i}", transport)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return {
            "core_bytes": (bare - before) / count,
            "held_bytes": (held - before) / count,
            "joined": joined,
        }
    for i in range(count):
        shells[i] = shell(cores[i], f"k3v9x2.{i}", transport)
    gc.collect()
    return {"rss_bytes": (_rss_bytes() - before) / count, "joined": joined}


def memory_in_subprocess(name: str, count: int, method: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.wscores", "--memory-worker", name,
         "--connections", str(count), "--method", method],
        capture_output=True, text=True, check=True, timeout=300,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


# CPU: interleaved rounds, medians.


def _timed(run: Callable[[], object], repeat: int) -> float:
    gc.disable()
    try:
        # CPU time of this process: time spent waiting for a core shared with
        # other work does not count, the work does.
        start = time.process_time_ns()
        for _ in range(repeat):
            run()
        return float(time.process_time_ns() - start)
    finally:
        gc.enable()


def _feed(core: Core[Any], receiver: Any, frames: int, parsed: list[int]) -> None:
    """One client frame per read, as a client typing chats sends them."""
    receive = core.receive
    n = 0
    for _ in range(frames):
        n += receive(receiver, CLIENT_FRAME)
    parsed.append(n)


@dataclass
class Result:
    name: str
    note: str
    core_bytes: float = 0.0
    held_bytes: float = 0.0
    rss_bytes: float = 0.0
    joined: int = 0
    each_ns: list[float] = field(default_factory=list)
    shared_ns: list[float] = field(default_factory=list)
    receive_ns: list[float] = field(default_factory=list)
    frames_fed: int = 0
    messages_parsed: int = 0
    deliveries: int = 0
    bytes_written: int = 0
    frame_ok: bool = True

    def median(self, which: str) -> float:
        values: list[float] = getattr(self, which)
        return statistics.median(values) if values else float("nan")

    def ratio(self, which: str, base: Result, base_which: str) -> float:
        """Median over rounds of this core's time divided by `base`'s in the same round."""
        mine: list[float] = getattr(self, which)
        theirs: list[float] = getattr(base, base_which)
        return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def measure(
    cores: Iterable[Core[Any]] = CANDIDATES,
    connections: int = CONNECTIONS,
    members: int = MEMBERS,
    rounds: int = ROUNDS,
    fanouts: int = 20,
    frames: int = 20_000,
    rss_repeats: int = 3,
) -> list[Result]:
    cores = list(cores)
    results = [Result(core.name, core.note) for core in cores]
    for core, result in zip(cores, results, strict=True):
        traced = memory_in_subprocess(core.name, connections, "tracemalloc")
        result.core_bytes = traced["core_bytes"]
        result.held_bytes = traced["held_bytes"]
        result.joined = int(traced["joined"])
    rss: dict[str, list[float]] = {core.name: [] for core in cores}
    for _ in range(rss_repeats):
        for core in cores:
            rss[core.name].append(memory_in_subprocess(core.name, connections, "rss")["rss_bytes"])
    for result in results:
        result.rss_bytes = statistics.median(rss[result.name])

    expected = text_frame(CHAT_BODY)
    rooms: list[tuple[list[Connection], Transport]] = []
    receivers = []
    for core in cores:
        transport = Transport()
        room = [shell(core.open(), f"m.{i}", transport) for i in range(members)]
        rooms.append((room, transport))
        receivers.append(core.open())
    lineup = list(zip(cores, results, rooms, receivers, strict=True))
    for k in range(rounds):
        # Every core once per round, starting with a different one each round.
        start = k % len(lineup)
        for core, result, (room, transport), receiver in lineup[start:] + lineup[:start]:
            body = CHAT_BODY
            before = transport.written
            result.each_ns.append(
                _timed(partial(core.send_each, room, body), fanouts) / (fanouts * members)
            )
            result.frame_ok &= transport.last == expected
            transport.last = b""
            result.shared_ns.append(
                _timed(partial(core.send_shared, room, body), fanouts) / (fanouts * members)
            )
            result.frame_ok &= transport.last == expected
            result.deliveries += 2 * fanouts * members
            result.bytes_written += transport.written - before

            parsed: list[int] = []
            result.receive_ns.append(
                _timed(partial(_feed, core, receiver, frames, parsed), 1) / frames
            )
            result.frames_fed += frames
            result.messages_parsed += sum(parsed)
    return results


# The table and the rule.

BUDGET = 1.25  # a library may cost up to 25 % more memory and CPU per delivery than our core


def verdict(results: Sequence[Result]) -> list[str]:
    own = next(r for r in results if r.name == "own")
    lines = []
    for r in results:
        if r is own:
            continue
        memory = max(r.held_bytes / own.held_bytes, r.rss_bytes / own.rss_bytes)
        each = r.ratio("each_ns", own, "shared_ns")
        shared = r.ratio("shared_ns", own, "shared_ns")
        fits_each = memory <= BUDGET and each <= BUDGET
        fits_shared = memory <= BUDGET and shared <= BUDGET
        lines.append(
            f"{r.name}: memory {memory:.2f}x, delivery through the core {each:.2f}x, "
            f"shared frames {shared:.2f}x -> "
            + ("within budget" if fits_each else
               "within budget with shared frames only" if fits_shared else "over budget")
        )
    return lines


def table(results: Sequence[Result]) -> str:
    own = next(r for r in results if r.name == "own")
    head = (
        "| core | core alone B/conn | held (shell + core) B/conn | RSS B/conn | memory vs own "
        "| ns/delivery through the core | ns/delivery, shared frame | delivery vs own "
        "| ns/received frame | receive vs own |"
    )
    rows = [head, "|" + "---|" * 10]
    for r in results:
        rows.append(
            f"| {r.name} | {r.core_bytes:,.0f} | {r.held_bytes:,.0f} | {r.rss_bytes:,.0f} "
            f"| {r.held_bytes / own.held_bytes:.2f}x / {r.rss_bytes / own.rss_bytes:.2f}x "
            f"| {r.median('each_ns'):,.0f} | {r.median('shared_ns'):,.0f} "
            f"| {r.ratio('each_ns', own, 'shared_ns'):.2f}x / "
            f"{r.ratio('shared_ns', own, 'shared_ns'):.2f}x "
            f"| {r.median('receive_ns'):,.0f} "
            f"| {r.ratio('receive_ns', own, 'receive_ns'):.2f}x |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wscores",
        description="WebSocket cores side by side: memory per connection, CPU per "
        "delivery and per received frame.",
    )
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--cores", default=",".join(c.name for c in CANDIDATES))
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    parser.add_argument("--memory-worker", metavar="CORE", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=("tracemalloc", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_in_this_process(args.memory_worker, args.connections, args.method)))
        return
    cores = [candidate(name) for name in args.cores.split(",")]
    results = measure(cores, args.connections, args.members, args.rounds)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
        return
    import websockets.version

    print(
        f"Python {sys.version.split()[0]}, websockets {websockets.version.version}, "
        f"wsproto {wsproto.__version__}; {args.connections:,} connections for memory, "
        f"{args.members:,} members per delivery, medians of {args.rounds} interleaved rounds\n"
    )
    print(table(results))
    print(
        "\nmemory vs own: held bytes / RSS; delivery vs own: through the core / shared "
        "frame, each over own's shared-frame delivery; ratios are medians of per-round ratios\n"
    )
    for r in results:
        if r.note:
            print(f"- {r.name}: {r.note}")
    print()
    for line in verdict(results):
        print(line)


if __name__ == "__main__":
    main()
