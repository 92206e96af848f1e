"""Real broker and edge processes on free ports, always cleaned up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import free_port
from chatconfig import BrokerEndpoints, BrokerLink

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate: Any, timeout: float = START_TIMEOUT, what: str = "condition") -> None:
    """Poll a cheap check (a health endpoint, a port) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if predicate():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def env_with(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Proc:
    args: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    # With a log file, stdout and stderr are appended to it (`output()` reads
    # it back); without, stderr goes to the test's own and stdout is dropped.
    log: Path | None = None

    def start(self) -> Proc:
        if self.log is None:
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=None
            )
            return self
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def output(self) -> str:
        """Everything the process wrote so far (only with a `log` file)."""
        assert self.log is not None, "started without a log file"
        return self.log.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self) -> None:
        stop_all([self])


def stop_all(procs: Sequence[Proc]) -> None:
    """SIGTERM to every running process at once, then wait for each (SIGKILL after
    10 s): their graceful shutdowns overlap instead of adding up."""
    running = [p for p in procs if p.popen is not None and p.popen.poll() is None]
    for proc in running:
        proc.signal(signal.SIGTERM)
    for proc in running:
        assert proc.popen is not None
        try:
            proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(5)


@dataclass
class Edge:
    port: int
    proc: Proc

    @classmethod
    def spawn(cls, env: dict[str, str], args: Sequence[str] = (),
              port: int | None = None) -> Edge:
        """`python -m edge` on `port` (a free one if not given), started."""
        port = port or free_port()
        proc = Proc([sys.executable, "-m", "edge", "--port", str(port), *args], env).start()
        return cls(port, proc)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        import json

        status, body = http_get(self.http + "/healthz")
        return status, json.loads(body)

    def metrics(self) -> dict[str, float]:
        status, body = http_get(self.http + "/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        wait_until(lambda: self.health()[0] == 200, timeout, f"edge :{self.port} healthy")


def thread_names(pid: int) -> list[str]:
    """The names of a process's threads (libzmq names its I/O threads ZMQbg/IO/N)."""
    return sorted(task.joinpath("comm").read_text().strip()
                  for task in Path(f"/proc/{pid}/task").iterdir())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@dataclass
class Cluster:
    broker_pub: str
    broker_sub: str
    extra_env: dict[str, str]
    broker: Proc | None = None
    edges: list[Edge] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        return env_with(
            {"CHAT_BROKER_PUB": self.broker_pub, "CHAT_BROKER_SUB": self.broker_sub}
            | self.extra_env
        )

    def start_broker(self, log: Path | None = None) -> Proc:
        """A broker on this cluster's endpoints; with `log`, its output goes there."""
        self.broker = Proc([sys.executable, "-m", "broker"], self._env(), log=log).start()
        return self.broker

    def start_edge(self, port: int | None = None, args: Sequence[str] = ()) -> Edge:
        edge = Edge.spawn(self._env(), args, port)
        self.edges.append(edge)
        return edge

    def urls(self) -> list[str]:
        return [e.url for e in self.edges]

    def link(self) -> BrokerLink:
        """What a publisher needs to reach this cluster's broker."""
        return BrokerLink(BrokerEndpoints(self.broker_pub, self.broker_sub))

    def stop(self) -> None:
        # Edges first: each one's shutdown flushes through the broker.
        stop_all([edge.proc for edge in self.edges])
        if self.broker is not None:
            self.broker.stop()


@contextlib.contextmanager
def running_cluster(
    edges: int = 3, env: dict[str, str] | None = None, edge_args: Sequence[str] = ()
) -> Iterator[Cluster]:
    cluster = Cluster(
        f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", env or {}
    )
    try:
        cluster.start_broker()
        for _ in range(edges):
            cluster.start_edge(args=edge_args)
        for edge in cluster.edges:
            edge.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


@dataclass
class ShardedCluster:
    """N broker shards (`--shard I/N`, each its own ports and data dir) and edges
    that list them all."""

    shards: list[tuple[str, str]]
    extra_env: dict[str, str]
    data_dir: Path | None = None
    logs: Path | None = None
    brokers: list[Proc | None] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    @property
    def shard_list(self) -> str:
        return ",".join(f"{pub}|{sub}" for pub, sub in self.shards)

    def _broker_env(self, i: int) -> dict[str, str]:
        pub, sub = self.shards[i]
        env = {"CHAT_BROKER_PUB": pub, "CHAT_BROKER_SUB": sub,
               "CHAT_SHARD": f"{i}/{len(self.shards)}"}
        if self.data_dir is not None:
            env["CHAT_DATA_DIR"] = str(self.data_dir / f"shard{i}")
        return env_with(env | self.extra_env)

    def start_broker(self, i: int, shard_spec: str | None = None) -> Proc:
        env = self._broker_env(i)
        if shard_spec is not None:
            env["CHAT_SHARD"] = shard_spec
        log = None if self.logs is None else self.logs / f"broker{i}.log"
        proc = Proc([sys.executable, "-m", "broker"], env, log=log).start()
        while len(self.brokers) <= i:
            self.brokers.append(None)
        self.brokers[i] = proc
        return proc

    def edge_env(self, shard_list: str | None = None) -> dict[str, str]:
        return env_with({"CHAT_BROKER_SHARDS": shard_list or self.shard_list} | self.extra_env)

    def start_edge(self, args: Sequence[str] = (), shard_list: str | None = None) -> Edge:
        edge = Edge.spawn(self.edge_env(shard_list), args)
        self.edges.append(edge)
        return edge

    def urls(self) -> list[str]:
        return [e.url for e in self.edges]

    def link(self) -> BrokerLink:
        """What a publisher needs to reach every shard."""
        return BrokerLink(broker_shards=tuple(f"{p}|{s}" for p, s in self.shards))

    def stop(self) -> None:
        # Edges first: each one's shutdown flushes through the brokers.
        stop_all([edge.proc for edge in self.edges])
        stop_all([broker for broker in self.brokers if broker is not None])


def shard_ends(n: int) -> list[tuple[str, str]]:
    return [(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
            for _ in range(n)]


@contextlib.contextmanager
def running_shards(
    shards: int = 2, edges: int = 2, env: dict[str, str] | None = None,
    data_dir: Path | None = None, logs: Path | None = None,
) -> Iterator[ShardedCluster]:
    cluster = ShardedCluster(shard_ends(shards), env or {}, data_dir, logs)
    try:
        for i in range(shards):
            cluster.start_broker(i)
        for _ in range(edges):
            cluster.start_edge()
        for edge in cluster.edges:
            wait_until(lambda edge=edge: edge.health()[1].get("shardsUp") == shards,
                       START_TIMEOUT, f"edge :{edge.port} sees every shard")
        yield cluster
    finally:
        cluster.stop()
