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
        # with each delay added on every host's link (tc netem): p50, p99, max

While it runs, `ip netns exec rc-cl curl -s 10.250.0.20:8081/healthz` asks an
edge from the clients' host, and `ip netns exec rc-b1 ip link set eth0 down`
cuts shard 1's host off (`up` brings it back). Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
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
            raise RuntimeError(f"tc netem refused ({done.stderr.strip()}): this kernel may "
                               "lack the sch_netem module")

    def run(self, name: str, argv: list[str], env: dict[str, str],
            log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv], env=env,
                                    stdout=out, stderr=subprocess.STDOUT)

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

    def start_broker(self, i: int) -> None:
        a = self.hosts.address[f"b{i}"]
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
            "CHAT_HOST": self.hosts.address[f"e{i}"],
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
        self.procs.clear()


@contextlib.contextmanager
def running(shards: int = 2, edges: int = 2, prefix: str = "rc",
            work: Path | None = None, probe_timeout: float = 1.5,
            edge_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Hosts built, processes started; everything stopped and deleted on the way out."""
    hosts = Hosts(prefix)
    root = Path(__file__).resolve().parents[1]
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="netns-")))
        stack.callback(hosts.teardown)
        hosts.build(Cluster.host_names(shards, edges))
        cluster = Cluster(hosts, shards, edges, work, root, probe_timeout, edge_env or {})
        stack.callback(cluster.stop)
        cluster.start()
        yield cluster


async def _latencies(cluster: Cluster, chats: int, rate: float) -> list[float]:
    """Seconds from send to arrival at a member on the other edge, for each chat."""
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
        for ws in (sender, reader):
            for room in rooms:
                await ws.send_json({"type": "join", "payload": {"roomId": room}})
                while (await ws.receive_json())["type"] != "joined":
                    pass
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
    return took


def measure(delays: list[float], chats: int = 400, rate: float = 100.0) -> list[str]:
    """One cluster per delay: p50, p99 and max of chat latency across hosts."""
    import asyncio

    rows = []
    for ms in delays:
        # One sender at `rate` chats/s: above the default per-connection limit.
        with running(2, 2, prefix="rl", edge_env={"CHAT_RATE_LIMIT": "0"}) as cluster:
            for name in cluster.hosts.address:
                if ms:
                    cluster.hosts.delay(name, ms)
            def run(c: Cluster = cluster) -> list[float]:
                return asyncio.run(_latencies(c, chats, rate))

            took = sorted(cluster.hosts.call_in("cl", run))
            p50, p99 = took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.99))]
            rows.append(f"| {ms:g} ms | {chats} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | "
                        f"{took[-1] * 1000:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "latency"))
    parser.add_argument("--delays", default="0,1,5,20",
                        help="latency: comma-separated delays in ms added on every link")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="latency added on every host's link (tc netem)")
    parser.add_argument("--prefix", default="rc", help="namespace names start with PREFIX-")
    args = parser.parse_args(argv)
    if args.action == "down":
        Hosts(args.prefix).teardown()
        return 0
    if args.action == "latency":
        print("| delay per link | chats | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        for row in measure([float(d) for d in args.delays.split(",") if d.strip()]):
            print(row, flush=True)
        return 0
    try:
        with running(args.shards, args.edges, args.prefix) as cluster:
            if args.delay_ms:
                for name in cluster.hosts.address:
                    cluster.hosts.delay(name, args.delay_ms)
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
    except NamespacesRefused as exc:
        print(f"netns_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
