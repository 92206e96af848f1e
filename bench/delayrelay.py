"""A TCP relay that delays every byte by a fixed time each way.

Latency between hosts where the kernel has no netem qdisc: a connection
accepted on LISTEN is relayed to TARGET, and every chunk read on either side
is written to the other `--delay-ms` after it arrived, in order. An end of
stream (EOF) is passed on after the data before it, a reset as an abort.

    python -m bench.delayrelay --delay-ms 20 10.250.0.10:5559=127.0.0.1:5559 ...

It prints `ready` once every listener is bound; SIGTERM or SIGINT stops it.
What is held, when it is due and when reading stops is decided by the pure
`bench/delayline.py`; this module only moves bytes and keeps the timers.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.delayline import DelayLine

LIMIT = 1 << 20  # bytes held per direction of a connection before reading stops


@dataclass(frozen=True)
class Route:
    """Connections accepted on `listen` go to `target` (both `(host, port)`)."""

    listen: tuple[str, int]
    target: tuple[str, int]

    @classmethod
    def parse(cls, text: str) -> Route:
        """`HOST:PORT=HOST:PORT`."""
        try:
            listen, target = text.split("=")
            return cls(_address(listen), _address(target))
        except ValueError:
            raise ValueError(f"{text!r}: expected LISTEN_HOST:PORT=TARGET_HOST:PORT") from None


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        raise ValueError(text)
    return host.strip("[]"), int(port)


class _Pipe:
    """One direction of a relayed connection: what `source` reads, `sink` gets late."""

    def __init__(self, line: DelayLine, on_end: Callable[[], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.line = line
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None  # None until the target answers
        self.reset = False  # the source was reset: abort the sink instead of an EOF
        self._on_end = on_end
        self._sink_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def feed(self, data: bytes) -> None:
        self.line.push(self.loop.time(), data)
        if self.line.full and self.source is not None and self.source.is_reading():
            self.source.pause_reading()
        self.arm()

    def finish(self, reset: bool = False) -> None:
        self.reset = self.reset or reset
        self.line.finish(self.loop.time())
        self.arm()

    def arm(self) -> None:
        """One timer, for the head of the line, while the sink can take bytes."""
        if self._timer is not None or self.sink is None or self._sink_paused:
            return
        at = self.line.next_release
        if at is not None:
            self._timer_at = at
            self._timer = self.loop.call_at(at, self._release)

    def _release(self) -> None:
        self._timer = None
        assert self.sink is not None
        # The loop may run a timer a hair before its time: it is due, as far as we care.
        out = self.line.due(max(self.loop.time(), self._timer_at))
        if out.data:
            self.sink.write(out.data)
        if out.end:
            if self.reset:
                self.sink.abort()
            elif self.sink.can_write_eof():
                self.sink.write_eof()
            self._on_end()
        source = self.source
        if (source is not None and not self.line.full and not source.is_reading()
                and not source.is_closing()):
            source.resume_reading()
        self.arm()

    def pause(self) -> None:
        """The sink's write buffer is full: hold everything here until it drains."""
        self._sink_paused = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def resume(self) -> None:
        self._sink_paused = False
        self.arm()

    def stop(self) -> None:
        """The sink is gone."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.line.drop()


class _End(asyncio.Protocol):
    """One of a relayed connection's two sockets: reads into `outbound`, written by `inbound`."""

    def __init__(self, outbound: _Pipe, inbound: _Pipe,
                 on_made: Callable[[asyncio.Transport], None],
                 on_lost: Callable[[], None]) -> None:
        self.outbound, self.inbound = outbound, inbound
        self._on_made, self._on_lost = on_made, on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.outbound.source = transport
        self.inbound.sink = transport
        self.inbound.arm()
        self._on_made(transport)

    def data_received(self, data: bytes) -> None:
        self.outbound.feed(data)

    def eof_received(self) -> bool:
        self.outbound.finish()
        return True  # half-closed: the other way keeps flowing until its own end

    def pause_writing(self) -> None:
        self.inbound.pause()

    def resume_writing(self) -> None:
        self.inbound.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbound.stop()
        self.outbound.finish(reset=exc is not None)
        self._on_lost()


@dataclass(eq=False)  # kept in a set, by identity
class _Connection:
    """An accepted socket and the relay's own to the target, closed together."""

    relay: Relay
    target: tuple[str, int]
    up: _Pipe = field(init=False)  # accepted side -> target
    down: _Pipe = field(init=False)  # target -> accepted side
    transports: list[asyncio.Transport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.up = _Pipe(DelayLine(self.relay.delay, self.relay.limit), self._ended)
        self.down = _Pipe(DelayLine(self.relay.delay, self.relay.limit), self._ended)

    def accepted_side(self) -> _End:
        return _End(self.up, self.down, self._accepted, self._ended)

    def _accepted(self, transport: asyncio.Transport) -> None:
        self.transports.append(transport)
        self.relay.open.add(self)
        task = asyncio.get_running_loop().create_task(self._connect())
        self.relay.tasks.add(task)
        task.add_done_callback(self.relay.tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(
                lambda: _End(self.down, self.up, self.transports.append, self._ended),
                *self.target)
        except OSError:
            self.close(abort=True)  # as a refused connection would look from afar

    def _ended(self) -> None:
        # Both ways ended (or their sinks gone): nothing more can cross.
        if self.up.line.ended and self.down.line.ended:
            self.close()

    def close(self, abort: bool = False) -> None:
        for transport in self.transports:
            if abort:
                transport.abort()
            else:
                transport.close()  # after what is already written
        self.relay.open.discard(self)


class Relay:
    """Every route's listener; `addresses` are where they listen (ports resolved)."""

    def __init__(self, routes: Sequence[Route], delay: float, limit: int = LIMIT) -> None:
        self.routes = list(routes)
        self.delay = delay
        self.limit = limit
        self.addresses: list[tuple[str, int]] = []
        self.open: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for route in self.routes:
            def accept(target: tuple[str, int] = route.target) -> _End:
                return _Connection(self, target).accepted_side()

            server = await loop.create_server(accept, *route.listen)
            self._servers.append(server)
            host, port = server.sockets[0].getsockname()[:2]
            self.addresses.append((host, port))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.open):
            conn.close(abort=True)
        for server in self._servers:
            await server.wait_closed()


async def _serve(routes: list[Route], delay: float, limit: int) -> None:
    relay = Relay(routes, delay, limit)
    await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await relay.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("routes", nargs="+", metavar="LISTEN=TARGET",
                        help="HOST:PORT=HOST:PORT, one per listener")
    parser.add_argument("--delay-ms", type=float, required=True,
                        help="each chunk is written this long after it was read, both ways")
    parser.add_argument("--limit-bytes", type=int, default=LIMIT,
                        help="bytes held per direction of a connection before reading stops")
    args = parser.parse_args(argv)
    try:
        routes = [Route.parse(r) for r in args.routes]
    except ValueError as exc:
        parser.error(str(exc))
    if args.delay_ms < 0 or args.limit_bytes <= 0:
        parser.error("--delay-ms must be >= 0 and --limit-bytes > 0")
    asyncio.run(_serve(routes, args.delay_ms / 1000, args.limit_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
