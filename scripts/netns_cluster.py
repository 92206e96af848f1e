#!/usr/bin/env python3
"""Several hosts on one machine: network namespaces joined by a bridge.

Each "host" is a network namespace with one veth interface (`eth0`) on a
private 10.250.0.0/24 network; the peers of those interfaces meet on a
bridge in a hub namespace, so nothing is added to the machine's own network
(the addresses exist only inside namespaces this script creates and, always,
deletes). Broker shards run on their own hosts, edges on others, with CURVE
between them; clients connect from yet another host to the edges' addresses.

    sudo .venv/bin/python scripts/netns_cluster.py up      # until Ctrl-C, then torn down
    sudo .venv/bin/python scripts/netns_cluster.py up --shards 2 --edges 2 --delay-ms 5
    sudo .venv/bin/python scripts/netns_cluster.py down    # remove leftovers of a crash
    sudo .venv/bin/python scripts/netns_cluster.py latency --delays 0,1,5,20
        # chat latency across hosts (client -> edge -> shard -> other edge -> client)
        # with each delay added between hosts: p50, p99, max

A delay D between hosts is made with `tc netem` on every host's link when the
kernel has that qdisc, and otherwise by delay relays (bench/delayrelay.py):
then brokers and edges listen on their host's loopback and a relay on each
of their hosts listens on the host's address, so every edge<->shard and
client<->edge connection crosses one relay, D late each way, as with netem
(`--delay-via relay` forces them; the output says which was used). Behind a
relay an edge sees every client as 127.0.0.1. `--delay-scope edge-shard`
delays only the edge<->shard connections (relays on the brokers' hosts only):
a chat then crosses the delay twice instead of four times.

While it runs, `ip netns exec rc-cl curl -s 10.250.0.12:8081/healthz` asks an
edge from the clients' host, and `ip netns exec rc-b1 ip link set eth0 down`
cuts shard 1's host off (`up` brings it back). Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
NETWORK = "10.250.0"
CLONE_NEWNET = 0x40000000
BROKER_PUB_PORT, BROKER_SUB_PORT, EDGE_PORT = 5559, 5560, 8081


class NamespacesRefused(RuntimeError):
    """This machine does not let us make network namespaces (not root, say)."""


class NetemMissing(RuntimeError):
    """This kernel has no netem qdisc (`tc` answers "Specified qdisc kind is unknown")."""


def _ip(*args: str, ns: str | None = None, check: bool = True) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


@dataclass
class Hosts:
    """Namespaces named PREFIX-NAME on one bridge; `address[name]` inside each."""

    prefix: str = "rc"
    address: dict[str, str] = field(default_factory=dict)
    _made: list[str] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def build(self, names: list[str]) -> None:
        if os.geteuid() != 0:
            raise NamespacesRefused("network namespaces need root")
        self.teardown()  # leftovers of an earlier run with this prefix
        try:
            self._add_ns(self.hub)
        except RuntimeError as exc:
            raise NamespacesRefused(str(exc)) from None
        _ip("link", "add", "br0", "type", "bridge", ns=self.hub)
        _ip("link", "set", "br0", "up", ns=self.hub)
        for i, name in enumerate(names):
            ns = self.ns(name)
            self._add_ns(ns)
            inside, outside = f"{self.prefix}i{i}", f"{self.prefix}o{i}"
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", ns, "name", "eth0")
            _ip("link", "set", outside, "netns", self.hub)
            _ip("link", "set", outside, "master", "br0", ns=self.hub)
            _ip("link", "set", outside, "up", ns=self.hub)
            address = f"{NETWORK}.{10 + i}"
            _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            self.address[name] = address

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("link", "set", "lo", "up", ns=ns)

    def teardown(self) -> None:
        """Delete every namespace of this prefix (their interfaces go with them)."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        names = {line.split()[0] for line in listed.splitlines() if line.strip()}
        for ns in sorted(names | set(self._made)):
            if ns.startswith(f"{self.prefix}-"):
                _ip("netns", "del", ns, check=False)
        self._made.clear()

    def link(self, name: str, up: bool) -> None:
        """`ip link set eth0 down` (or up) on a host: cut off, or back."""
        _ip("link", "set", "eth0", "up" if up else "down", ns=self.ns(name))

    def delay(self, name: str, ms: float) -> None:
        """Add `ms` of latency to everything the host sends (tc netem)."""
        done = subprocess.run(["ip", "netns", "exec", self.ns(name), "tc", "qdisc", "replace",
                               "dev", "eth0", "root", "netem", "delay", f"{ms}ms"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            error = done.stderr.strip()
            if "unknown" in error.lower():
                raise NetemMissing(f"tc netem refused ({error}): this kernel has no netem "
                                   "qdisc (sch_netem)")
            raise RuntimeError(f"tc netem refused: {error}")

    def run(self, name: str, argv: list[str], env: dict[str, str],
            log: Path, pipe_stdout: bool = False) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            # Piped: the caller reads what it prints (a relay's "ready"); errors still logged.
            stdout, stderr = (subprocess.PIPE, out) if pipe_stdout else (out, subprocess.STDOUT)
            return subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv], env=env,
                                    stdout=stdout, stderr=stderr)

    def call_in(self, name: str, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that lives in the host's namespace: sockets it opens
        are that host's."""
        result: list[Any] = []

        def body() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.ns(name)}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                result.append((True, fn()))
            except BaseException as exc:  # handed to the caller's thread
                result.append((False, exc))

        thread = threading.Thread(target=body, name=f"in-{name}")
        thread.start()
        thread.join()
        ok, value = result[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


@dataclass
class Cluster:
    """Broker shards, each on its own host, and edges on others, CURVE between them."""

    hosts: Hosts
    shards: int
    edges: int
    work: Path
    root: Path
    probe_timeout: float = 1.5
    edge_env: dict[str, str] = field(default_factory=dict)  # more CHAT_* for the edges
    relay_ms: float | None = None  # a delay relay in front of every broker (and edge)
    relay_edges: bool = True  # relays in front of the edges too: client<->edge delayed
    delay_via: str = "none"  # what makes the delay between hosts: none, netem, relay
    delay_note: str = "no delay between hosts"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    broker_procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @staticmethod
    def host_names(shards: int, edges: int) -> list[str]:
        return [*(f"b{i}" for i in range(shards)), *(f"e{i}" for i in range(edges)), "cl"]

    def edge_url(self, i: int) -> str:
        return f"ws://{self.hosts.address[f'e{i}']}:{EDGE_PORT}/"

    def edge_http(self, i: int) -> str:
        return f"http://{self.hosts.address[f'e{i}']}:{EDGE_PORT}"

    @property
    def shard_list(self) -> str:
        ends = []
        for i in range(self.shards):
            a = self.hosts.address[f"b{i}"]
            ends.append(f"tcp://{a}:{BROKER_PUB_PORT}|tcp://{a}:{BROKER_SUB_PORT}")
        return ",".join(ends)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.root), env.get("PYTHONPATH"))
                                            if p)
        return env | extra

    def keys(self) -> None:
        # One key pair for every shard (as `--curve-broker-key` names one file),
        # one per edge, each edge's public key allowed at the brokers.
        names = ["broker", *(f"edge{i}" for i in range(self.edges))]
        subprocess.run([sys.executable, "-m", "chatconfig.curve", *names, "--dir",
                        str(self.work / "keys"), "--allow", str(self.work / "allowed")],
                       check=True, capture_output=True, env=self._env({}), cwd=self.root)

    def _bind(self, host: str) -> str:
        """Where a process on `host` listens: behind a relay, the host's loopback."""
        relayed = self.relay_ms is not None and (self.relay_edges or host.startswith("b"))
        return "127.0.0.1" if relayed else self.hosts.address[host]

    def start_relay(self, host: str, ports: tuple[int, ...]) -> None:
        """The host's address's `ports` relayed to its loopback, `relay_ms` late each way."""
        assert self.relay_ms is not None
        a = self.hosts.address[host]
        log = self.work / f"relay-{host}.log"
        proc = self.hosts.run(host, [sys.executable, "-m", "bench.delayrelay", "--delay-ms",
                                     f"{self.relay_ms:g}", *(f"{a}:{p}=127.0.0.1:{p}"
                                                             for p in ports)],
                              self._env({}), log, pipe_stdout=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        # Its one line, once every listener is bound.
        readable, _, _ = select.select([proc.stdout], [], [], 15)
        if not readable or proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the delay relay on {host} did not start: see {log}")

    def start_broker(self, i: int) -> None:
        a = self._bind(f"b{i}")
        env = self._env({
            "CHAT_BROKER_PUB": f"tcp://{a}:{BROKER_PUB_PORT}",
            "CHAT_BROKER_SUB": f"tcp://{a}:{BROKER_SUB_PORT}",
            "CHAT_SHARD": f"{i}/{self.shards}",
            "CHAT_DATA_DIR": str(self.work / f"data{i}"),
            "CHAT_CURVE_SECRET_KEY": str(self.work / "keys" / "broker.key_secret"),
            "CHAT_CURVE_ALLOWED": str(self.work / "allowed"),
        })
        proc = self.hosts.run(f"b{i}", [sys.executable, "-m", "broker"], env,
                              self.work / f"broker{i}.log")
        self.procs.append(proc)
        self.broker_procs[i] = proc

    def start_edge(self, i: int) -> None:
        env = self._env({
            "CHAT_BROKER_SHARDS": self.shard_list,
            "CHAT_HOST": self._bind(f"e{i}"),
            "CHAT_PORT": str(EDGE_PORT),
            "CHAT_NAME": f"edge{i}",
            "CHAT_PROBE_INTERVAL": str(self.probe_timeout / 3),
            "CHAT_PROBE_TIMEOUT": str(self.probe_timeout),
            "CHAT_CURVE_SECRET_KEY": str(self.work / "keys" / f"edge{i}.key_secret"),
            "CHAT_CURVE_BROKER_KEY": str(self.work / "keys" / "broker.key"),
        } | self.edge_env)
        self.procs.append(self.hosts.run(f"e{i}", [sys.executable, "-m", "edge"], env,
                                         self.work / f"edge{i}.log"))

    def start(self) -> None:
        self.keys()
        if self.relay_ms is not None:
            for i in range(self.shards):
                self.start_relay(f"b{i}", (BROKER_PUB_PORT, BROKER_SUB_PORT))
            for i in range(self.edges if self.relay_edges else 0):
                self.start_relay(f"e{i}", (EDGE_PORT,))
        for i in range(self.shards):
            self.start_broker(i)
        for i in range(self.edges):
            self.start_edge(i)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


def add_delay(hosts: Hosts, ms: float, via: str, scope: str = "all") -> tuple[str, str]:
    """Delay every host's link by `ms` with netem where `via` allows and the kernel has it.

    Returns how the delay is made, "none", "netem" or "relay" (relays are the
    cluster's to start), and a line that says so. Netem delays all a host
    sends, so only relays can delay the edge<->shard paths alone (`scope`)."""
    if scope == "edge-shard":
        if via == "netem":
            raise ValueError("netem delays all a host sends: --delay-scope edge-shard "
                             "needs relays")
        return "relay", (f"{ms:g} ms between edges and shards only: delay relays "
                         "(bench/delayrelay.py) on the brokers' hosts")
    if via == "relay":
        return "relay", f"{ms:g} ms between hosts: delay relays (bench/delayrelay.py), as asked"
    if not ms:
        return "none", "no delay between hosts"
    try:
        for name in hosts.address:
            hosts.delay(name, ms)
    except NetemMissing as exc:
        if via == "netem":
            raise
        return "relay", (f"{ms:g} ms between hosts: delay relays (bench/delayrelay.py), "
                         f"not netem: {exc}")
    return "netem", f"{ms:g} ms between hosts: tc netem on every host's link"


@contextlib.contextmanager
def running(shards: int = 2, edges: int = 2, prefix: str = "rc",
            work: Path | None = None, probe_timeout: float = 1.5,
            edge_env: dict[str, str] | None = None, delay_ms: float = 0.0,
            delay_via: str = "auto", delay_scope: str = "all") -> Iterator[Cluster]:
    """Hosts built, processes started; everything stopped and deleted on the way out.

    `delay_ms` between hosts, made as `delay_via` says: "netem", "relay", or
    "auto" (netem when the kernel has it, relays otherwise); the cluster's
    `delay_via` and `delay_note` say which. `delay_scope` "edge-shard" delays
    only what crosses between edges and shards."""
    hosts = Hosts(prefix)
    root = Path(__file__).resolve().parents[1]
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="netns-")))
        stack.callback(hosts.teardown)
        hosts.build(Cluster.host_names(shards, edges))
        via, note = add_delay(hosts, delay_ms, delay_via, delay_scope)
        cluster = Cluster(hosts, shards, edges, work, root, probe_timeout, edge_env or {},
                          relay_ms=delay_ms if via == "relay" else None,
                          relay_edges=delay_scope == "all", delay_via=via, delay_note=note)
        stack.callback(cluster.stop)
        cluster.start()
        yield cluster


@dataclass
class Latencies:
    """Seconds from send to arrival at a member on the other edge, per chat, and per join
    from `join` to `joined` (sender's and reader's joins of every room)."""

    chats: list[float]
    joins: list[float]


async def _latencies(cluster: Cluster, chats: int, rate: float) -> Latencies:
    import asyncio
    import json
    import urllib.request

    import aiohttp

    def shards_up(url: str) -> int:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                return int(json.loads(resp.read()).get("shardsUp", 0))
        except OSError:
            return 0

    deadline = time.monotonic() + 30
    for i in range(cluster.edges):
        while await asyncio.to_thread(shards_up, cluster.edge_http(i)) < cluster.shards:
            if time.monotonic() > deadline:
                raise TimeoutError("edges did not see every shard")
            await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as session:
        sender = await session.ws_connect(cluster.edge_url(0))
        reader = await session.ws_connect(cluster.edge_url(1 % cluster.edges))
        rooms = [f"lat-{i}" for i in range(4)]  # spread over the shards
        joins: list[float] = []
        for ws in (sender, reader):
            for room in rooms:
                began = time.monotonic()
                await ws.send_json({"type": "join", "payload": {"roomId": room}})
                while (await ws.receive_json())["type"] != "joined":
                    pass
                joins.append(time.monotonic() - began)
        sent: dict[str, float] = {}
        took: list[float] = []

        async def read() -> None:
            while len(took) < chats:
                frame = await reader.receive_json()
                if frame["type"] == "chat":
                    took.append(time.monotonic() - sent[frame["payload"]["message"]])

        reading = asyncio.create_task(read())
        start = time.monotonic()
        for n in range(chats):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            sent[str(n)] = time.monotonic()
            await sender.send_json({"type": "chat", "payload": {
                "roomId": rooms[n % len(rooms)], "message": str(n)}})
        await asyncio.wait_for(reading, 30)
        await sender.close()
        await reader.close()
    return Latencies(took, joins)


def _ms(sorted_values: list[float], q: float) -> str:
    return f"{sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] * 1000:.1f}"


LATENCY_HEAD = ("| delay | made by | delayed | chats | p50 ms | p99 ms | max ms "
                "| join p50 ms | join max ms |\n|---|---|---|---|---|---|---|---|---|")


def measure(delays: list[float], chats: int = 400, rate: float = 100.0,
            via: str = "auto", scope: str = "all") -> Iterator[str]:
    """One cluster per delay: p50, p99 and max of chat latency across hosts, and how long
    a join took; each row as it is measured."""
    import asyncio

    for ms in delays:
        # One sender at `rate` chats/s: above the default per-connection limit.
        with running(2, 2, prefix="rl", edge_env={"CHAT_RATE_LIMIT": "0"}, delay_ms=ms,
                     delay_via=via, delay_scope=scope) as cluster:
            print(f"netns_cluster: {cluster.delay_note}", file=sys.stderr, flush=True)

            def run(c: Cluster = cluster) -> Latencies:
                return asyncio.run(_latencies(c, chats, rate))

            got = cluster.hosts.call_in("cl", run)
            took, joins = sorted(got.chats), sorted(got.joins)
            where = "edge-shard" if scope == "edge-shard" else "all"
            yield (f"| {ms:g} ms | {cluster.delay_via} | {where} | {chats} | {_ms(took, 0.5)} | "
                   f"{_ms(took, 0.99)} | {took[-1] * 1000:.1f} | {_ms(joins, 0.5)} | "
                   f"{joins[-1] * 1000:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "latency"))
    parser.add_argument("--delays", default="0,1,5,20",
                        help="latency: comma-separated delays in ms between hosts")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="up: delay between hosts, each way")
    parser.add_argument("--delay-via", choices=("auto", "netem", "relay"), default="auto",
                        help="how a delay is made: tc netem, delay relays, or netem when the "
                             "kernel has it and relays otherwise (relay also at 0 ms: "
                             "the relays' own cost)")
    parser.add_argument("--delay-scope", choices=("all", "edge-shard"), default="all",
                        help="all: every connection between hosts (client<->edge too, as "
                             "netem on every link); edge-shard: only edges<->shards (relays)")
    parser.add_argument("--chats", type=int, default=400, help="latency: chats per delay")
    parser.add_argument("--prefix", default="rc", help="namespace names start with PREFIX-")
    args = parser.parse_args(argv)
    if args.delay_scope == "edge-shard" and args.delay_via == "netem":
        parser.error("netem delays all a host sends: --delay-scope edge-shard needs relays")
    if args.action == "down":
        Hosts(args.prefix).teardown()
        return 0
    try:
        if args.action == "latency":
            print(LATENCY_HEAD, flush=True)
            for row in measure([float(d) for d in args.delays.split(",") if d.strip()],
                               args.chats, via=args.delay_via, scope=args.delay_scope):
                print(row, flush=True)
            return 0
        with running(args.shards, args.edges, args.prefix, delay_ms=args.delay_ms,
                     delay_via=args.delay_via, delay_scope=args.delay_scope) as cluster:
            print(cluster.delay_note)
            for name, address in cluster.hosts.address.items():
                print(f"{cluster.hosts.ns(name):10} {address}")
            for i in range(cluster.edges):
                print(f"edge {i}: {cluster.edge_url(i)} (from {cluster.hosts.ns('cl')})")
            print(f"logs in {cluster.work}; Ctrl-C stops and deletes everything")
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.wait(0.5):
                pass
    except (NamespacesRefused, NetemMissing) as exc:
        print(f"netns_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
