"""What one hop between two processes costs: ZeroMQ over TCP and ipc://, and a plain socket.

    .venv/bin/python -m bench.hops [--round-trips 3000] [--gap-ms 1]

Every chat crosses two ZeroMQ hops (edge to broker, broker to edge). Each
libzmq socket does its I/O in the context's I/O thread, so a message wakes
the sender's I/O thread, then the receiver's, then the receiving thread:
three wake-ups where a plain socket has one. This measures that in
isolation. `zmtp-tcp` is the edge's way (edge.zmtpbus): the pinger speaks
ZMTP itself (protocol.zmtp) to the same libzmq echo, so only the echo's
side has an I/O thread. A pinger process sends a 200-byte message, an echo process sends
it back, `--round-trips` times with `--gap-ms` of sleep between them (the
regime of a moderate chat rate: every wake-up finds its thread asleep).
Each combination runs with both processes unpinned, both on one core, and
on a core each (taskset). Printed: the round trip's p50 and p99, and the
pinger's CPU per round trip (its I/O thread included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import zmq

from protocol import zmtp

KINDS = ("zmq-tcp", "zmq-ipc", "zmtp-tcp", "tcp-socket")
SIZE = 200
QUIT = b"q"


def _endpoints(kind: str, where: Path) -> tuple[str, str]:
    if kind == "zmq-ipc":
        return f"ipc://{where}/in", f"ipc://{where}/out"
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return (f"tcp://127.0.0.1:{a.getsockname()[1]}",
                f"tcp://127.0.0.1:{b.getsockname()[1]}")


def echo(kind: str, inbound: str, outbound: str) -> None:
    """Send back every message until QUIT; print READY once listening."""
    if kind == "tcp-socket":
        host, port = inbound.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_server((host, int(port))) as server:
            print("READY", flush=True)
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with conn:
                while (data := conn.recv(65536)) and data != QUIT:
                    conn.sendall(data)
        return
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(inbound)
    pub.bind(outbound)
    print("READY", flush=True)
    while (message := sub.recv_multipart())[0] != QUIT:
        pub.send_multipart(message)
    sub.close(0)
    pub.close(0)
    ctx.term()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


def ping(kind: str, inbound: str, outbound: str, round_trips: int, gap: float) -> None:
    """Time `round_trips` round trips through the echo; print the figures as JSON."""
    body = b"x" * SIZE
    if kind == "tcp-socket":
        host, port = inbound.removeprefix("tcp://").rsplit(":", 1)
        conn = socket.create_connection((host, int(port)))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def once() -> None:
            conn.sendall(body)
            got = 0
            while got < SIZE:
                got += len(conn.recv(65536))

        def close() -> None:
            conn.sendall(QUIT)
            conn.close()
    elif kind == "zmtp-tcp":
        once, close = _zmtp_pinger(inbound, outbound, body)
    else:
        ctx = zmq.Context()
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        pub.connect(inbound)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(outbound)
        # PUB drops until the subscriptions have travelled: send until one comes back.
        while True:
            pub.send_multipart([b"warm", body])
            if sub.poll(100):
                sub.recv_multipart()
                break

        def once() -> None:
            pub.send_multipart([b"t", body])
            sub.recv_multipart()

        def close() -> None:
            pub.send_multipart([QUIT])
            pub.close(linger=1000)
            sub.close(0)
            ctx.term()
    for _ in range(50):  # warm up, uncounted
        once()
    times = []
    cpu = _cpu_seconds()
    for _ in range(round_trips):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
        time.sleep(gap)
    cpu = _cpu_seconds() - cpu
    close()
    times.sort()
    print(json.dumps({
        "p50_us": times[len(times) // 2] * 1e6,
        "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
        "cpu_us_per_round_trip": cpu / round_trips * 1e6,
    }))


def _zmtp_pinger(inbound: str, outbound: str,
                 body: bytes) -> tuple[Callable[[], None], Callable[[], None]]:
    """The pinger's side spoken in ZMTP by this process (protocol.zmtp), no libzmq."""
    def dial(endpoint: str, socket_type: bytes) -> tuple[socket.socket, zmtp.Peer]:
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        conn = socket.create_connection((host, int(port)))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(zmtp.greeting() + zmtp.ready(socket_type))
        peer = zmtp.Peer()
        while not peer.ready:
            peer.receive(conn.recv(65536))
        return conn, peer

    pub, _ = dial(inbound, b"PUB")
    sub, sub_peer = dial(outbound, b"SUB")
    sub.sendall(zmtp.subscription(b"", True))

    def receive() -> list[bytes]:
        while True:
            for got in sub_peer.receive(sub.recv(65536)):
                if isinstance(got, zmtp.Ping):
                    sub.sendall(zmtp.pong(got.context))
                elif isinstance(got, list):
                    return got

    sub.settimeout(0.1)
    while True:  # the subscription travels while PUB's first messages may drop
        pub.sendall(zmtp.message([b"warm", body]))
        try:
            receive()
            break
        except TimeoutError:
            continue
    sub.settimeout(None)
    frame = zmtp.message([b"t", body])

    def once() -> None:
        pub.sendall(frame)
        receive()

    def close() -> None:
        pub.sendall(zmtp.message([QUIT]))
        pub.close()
        sub.close()
    return once, close


def placements() -> list[tuple[str, list[str], list[str]]]:
    """(name, the echo's taskset prefix, the pinger's)."""
    cores = sorted(os.sched_getaffinity(0))
    found: list[tuple[str, list[str], list[str]]] = [("unpinned", [], [])]
    if shutil.which("taskset") is None:
        return found
    one = ["taskset", "-c", str(cores[0])]
    found.append(("one core", one, one))
    if len(cores) > 1:
        found.append(("a core each", ["taskset", "-c", str(cores[1])], one))
    return found


def measure(kind: str, echo_prefix: Sequence[str], ping_prefix: Sequence[str],
            round_trips: int, gap: float) -> dict[str, float]:
    me = [sys.executable, "-m", "bench.hops"]
    with tempfile.TemporaryDirectory(prefix="chat-bench-hops-") as where:
        inbound, outbound = _endpoints(kind, Path(where))
        server = subprocess.Popen([*echo_prefix, *me, "--echo", kind, inbound, outbound],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "READY":
                raise RuntimeError(f"the {kind} echo did not start")
            done = subprocess.run(
                [*ping_prefix, *me, "--ping", kind, inbound, outbound,
                 "--round-trips", str(round_trips), "--gap-ms", str(gap * 1000)],
                capture_output=True, text=True, check=True, timeout=60 + round_trips * 0.05)
            server.wait(10)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=3000)
    parser.add_argument("--gap-ms", type=float, default=1.0,
                        help="sleep between round trips (default 1 ms)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, from "
                        + ", ".join(KINDS))
    parser.add_argument("--echo", nargs=3, metavar=("KIND", "IN", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--ping", nargs=3, metavar=("KIND", "IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        kind, inbound, outbound = args.echo
        echo(kind, inbound, outbound)
        return
    if args.ping:
        kind, inbound, outbound = args.ping
        ping(kind, inbound, outbound, args.round_trips, args.gap_ms / 1000)
        return
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    print(f"{args.round_trips} round trips of {SIZE} bytes, {args.gap_ms:g} ms apart\n")
    print("| hop | placement | round trip p50 µs | p99 µs | pinger CPU µs per round trip |")
    print("|---|---|---|---|---|")
    for name, echo_prefix, ping_prefix in placements():
        for kind in kinds:
            got = measure(kind, echo_prefix, ping_prefix, args.round_trips, args.gap_ms / 1000)
            print(f"| {kind} | {name} | {got['p50_us']:.0f} | {got['p99_us']:.0f} | "
                  f"{got['cpu_us_per_round_trip']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
