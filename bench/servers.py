"""Start a server design as real processes on free loopback ports, and stop it.

"ours" is one broker and one edge per server core (the cores `bench.pinning`
gives the servers: one when pinned on two cores), the broker keeping its rooms' streams
in a durable store (`CHAT_DATA_DIR`, as deploy/supervisord.conf ships it) in
a temporary directory, removed once it has stopped and been measured
(`ServerSet.store`); "ours-memory" is the same with history in memory only.
"ours:N" (and "ours-memory:N") is the same with N broker shards
(`chat-broker --shard I/N`, each its own process and store), and "ours/E"
(also "ours:N/E") the same with E edges whatever the cores: "ours/3" is the
three edges every figure before 2026-12-03 was taken with. More edges than
cores cost CPU per chat: each edge wakes, reads and writes for every chat of
a room it has members in, so the chat's fixed cost is paid once per edge
while its deliveries are shared out. The references
are in `bench/references/`. "ours@REF" (and "ours-memory@REF") is the same,
run from the commit REF (any git ref): REF is checked out into a temporary
detached worktree, the processes
start with their working directory there, so `python -m broker` and
`python -m edge` import that commit's packages before the installed ones, and
the worktree is removed once they have stopped. Every process is started under
the server cores' taskset, its stderr goes to a log file, and it counts as
started only once it answers (/healthz 200, or PONG for redis).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.pinning import CpuPlan
from bench.plan import Transport
from bench.storesize import store_figures

SERVERS = ("ours", "node", "naive", "socketio")  # the default set
OURS = "ours"
OURS_MEMORY = "ours-memory"
NAMES = (OURS, OURS_MEMORY, "node", "naive", "socketio")
PACKAGES = ("protocol", "broker", "edge", "chatconfig", "chatclient")  # roomcast's own
ROOT = Path(__file__).resolve().parents[1]
REFERENCES = Path(__file__).resolve().parent / "references"
NODE_DIR = REFERENCES / "node"
START_TIMEOUT = 30.0
MAX_EDGES = 16
SIO_PROCESSES = 3


class Unavailable(Exception):
    """A design that cannot run on this machine (a tool is missing)."""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, and never one handed out before by this process: the
    OS may give a port again once its probing socket is closed, before the
    process it was meant for has bound it (an edge and its broker were once
    given one port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")


@dataclass
class ServerSet:
    name: str
    transport: Transport
    description: str
    urls: list[str] = field(default_factory=list)
    procs: list[Process] = field(default_factory=list)
    # ours: the broker's store while it runs, and what it held once stopped.
    data_dir: Path | None = None
    store: dict[str, Any] | None = None

    @property
    def file_stem(self) -> str:
        """The name as a file name's start: `ours/3` -> `ours_3`."""
        return self.name.replace("/", "_")


class _Spawner:
    def __init__(self, cpus: CpuPlan, logs: Path, into: ServerSet) -> None:
        self.cpus = cpus
        self.logs = logs
        self.into = into
        logs.mkdir(parents=True, exist_ok=True)

    def spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        log = self.logs / f"{self.into.file_stem}-{name}.log"
        with log.open("wb") as err:
            popen = subprocess.Popen(
                [*self.cpus.server_prefix(), *args],
                env=_clean_env(env), cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err,
            )
        proc = Process(name, popen, log)
        self.into.procs.append(proc)
        return proc


def _clean_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_ready(proc: Process, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        proc.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} not ready after {timeout:.0f} s (log: {proc.log})")
        time.sleep(0.02)


# The references have no per-connection rate limits and no per-address cap, and
# every generator connection comes from 127.0.0.1: measure ours without them too.
OURS_ENV = {
    "CHAT_RATE_LIMIT": "0",
    "CHAT_JOIN_RATE_LIMIT": "0",
    "CHAT_MAX_CONNS_PER_IP": "0",
    "CHAT_LOG_LEVEL": "WARNING",
}


def _start_ours(sp: _Spawner, cwd: Path | None = None, shards: int = 1,
                durable: bool = True, edges: int = 1) -> None:
    env = {
        "CHAT_BROKER_PUB": f"tcp://127.0.0.1:{free_port()}",
        "CHAT_BROKER_SUB": f"tcp://127.0.0.1:{free_port()}",
        **OURS_ENV,
    }
    if durable:
        # A commit from before the store ignores the variable and keeps memory only.
        sp.into.data_dir = Path(tempfile.mkdtemp(prefix="chat-bench-store-"))

    def store(i: int) -> dict[str, str]:
        if sp.into.data_dir is None:
            return {}
        return {"CHAT_DATA_DIR": str(sp.into.data_dir if shards == 1
                                     else sp.into.data_dir / f"shard-{i}")}

    if shards == 1:
        sp.spawn("broker", [sys.executable, "-m", "broker"], env | store(0), cwd)
    else:
        ends = []
        for i in range(shards):
            pub, sub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
            ends.append(f"{pub}|{sub}")
            sp.spawn(f"broker-{i}", [sys.executable, "-m", "broker", "--shard", f"{i}/{shards}"],
                     env | {"CHAT_BROKER_PUB": pub, "CHAT_BROKER_SUB": sub} | store(i), cwd)
        env["CHAT_BROKER_SHARDS"] = ",".join(ends)
    started = []
    for n in range(1, edges + 1):
        port = free_port()
        started.append((sp.spawn(f"edge-{n}", [sys.executable, "-m", "edge", "--port", str(port)],
                                 env, cwd), port))
    for proc, port in started:
        wait_ready(proc, functools.partial(_http_ok, f"http://127.0.0.1:{port}/healthz"))
        sp.into.urls.append(f"ws://127.0.0.1:{port}/")


def ensure_node_modules() -> None:
    """`npm install` the reference's one dependency the first time it is needed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Unavailable("node/npm not on PATH")
    if (NODE_DIR / "node_modules" / "ws").is_dir():
        return
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR, check=True, stdin=subprocess.DEVNULL,
    )


def _start_node(sp: _Spawner) -> None:
    ensure_node_modules()
    port = free_port()
    proc = sp.spawn("node", ["node", "server.js", "--port", str(port)], cwd=NODE_DIR)
    wait_ready(proc, lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"))
    sp.into.urls.append(f"ws://127.0.0.1:{port}/")


def _start_naive(sp: _Spawner) -> None:
    port = free_port()
    proc = sp.spawn("naive", [sys.executable, "-m", "bench.references.naive", "--port", str(port)])
    wait_ready(proc, lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"))
    sp.into.urls.append(f"ws://127.0.0.1:{port}/")


def _start_socketio(sp: _Spawner) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise Unavailable("redis-server not on PATH (apt-get install redis-server)")
    redis_port = free_port()
    redis = sp.spawn("redis", [
        redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no",
    ])
    wait_ready(redis, lambda: _redis_pong(redis_port))
    url = f"redis://127.0.0.1:{redis_port}/0"
    started = []
    for n in range(1, SIO_PROCESSES + 1):
        port = free_port()
        args = [sys.executable, "-m", "bench.references.sio", "--port", str(port), "--redis", url]
        started.append((sp.spawn(f"sio-{n}", args), port))
    for proc, port in started:
        wait_ready(proc, functools.partial(_http_ok, f"http://127.0.0.1:{port}/healthz"))
        sp.into.urls.append(f"http://127.0.0.1:{port}")


_DESIGNS: dict[str, tuple[Transport, str, Callable[[_Spawner], None]]] = {
    OURS: ("ws", "roomcast: 1 broker (durable store, SQLite) + E edges (ZeroMQ), "
           "rate limits off", _start_ours),
    OURS_MEMORY: ("ws", "roomcast: 1 broker (history in memory only) + E edges "
                  "(ZeroMQ), rate limits off", functools.partial(_start_ours, durable=False)),
    "node": ("ws", "seed design: 1 Node.js process, `ws` package", _start_node),
    "naive": ("ws", "naive Python port: 1 aiohttp process, awaits send_str per member",
              _start_naive),
    "socketio": ("sio", f"python-socketio on aiohttp: {SIO_PROCESSES} processes + redis",
                 _start_socketio),
}


MAX_SHARDS = 16


_NAME = re.compile(r"(?P<design>[^:/@]*)(?::(?P<shards>[^/@]*))?(?:/(?P<edges>[^@]*))?"
                   r"(?:@(?P<ref>.*))?", re.DOTALL)


def _parts(name: str) -> dict[str, str | None]:
    match = _NAME.fullmatch(name)
    assert match is not None  # every part is optional
    return match.groupdict()


def shard_count(name: str) -> int:
    """`ours:N` and `ours:N@REF` -> N broker shards; anything else -> 1."""
    return int(_parts(name)["shards"] or 1)


def edge_count(name: str, cpus: CpuPlan) -> int:
    """`ours/E` -> E edges; otherwise one per server core (at most MAX_EDGES)."""
    edges = _parts(name)["edges"]
    return int(edges) if edges else max(1, min(MAX_EDGES, len(cpus.servers)))


def parse_name(name: str) -> tuple[str, str | None]:
    """`ours` -> ("ours", None); `ours@REF` -> ("ours", "REF"), roomcast as committed at REF;
    `ours:N` (and `ours:N@REF`): with N broker shards; `ours/E` (and `ours:N/E@REF`): E edges."""
    parts = _parts(name)
    design, count, edges, ref = parts["design"] or "", parts["shards"], parts["edges"], parts["ref"]
    ours = design in (OURS, OURS_MEMORY)
    if count is not None and (not ours or not count.isdigit()
                              or not 1 <= int(count) <= MAX_SHARDS):
        raise ValueError(f"{name!r}: only {OURS} and {OURS_MEMORY} have shards, {OURS}:N "
                         f"with N from 1 to {MAX_SHARDS}")
    if edges is not None and (not ours or not edges.isdigit()
                              or not 1 <= int(edges) <= MAX_EDGES):
        raise ValueError(f"{name!r}: only {OURS} and {OURS_MEMORY} have edges, {OURS}/E "
                         f"with E from 1 to {MAX_EDGES}")
    if design not in NAMES:
        raise ValueError(f"unknown server {name!r}; choose from {', '.join(NAMES)}, "
                         f"{OURS}:N, {OURS}/E or {OURS}@REF")
    if ref is not None and not ours:
        raise ValueError(f"{name!r}: only {OURS} and {OURS_MEMORY} can run from another "
                         f"commit ({OURS}@REF)")
    if ref is not None and not ref.strip():
        raise ValueError(f"{name!r}: name a git ref after the @ (a commit, tag, HEAD~5, ...)")
    return design, ref.strip() if ref is not None else None


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve_ref(ref: str) -> str:
    """The full commit id `ref` names in this checkout; ValueError if it names none."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except RuntimeError:
        raise ValueError(f"{ref!r} names no commit in {ROOT}") from None


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """`ref` checked out, detached, in a temporary git worktree, removed on the way out."""
    commit = resolve_ref(ref)
    parent = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    path = parent / f"roomcast-{commit[:12]}"
    try:
        _git("worktree", "add", "--detach", "--quiet", str(path), commit)
        yield path
    finally:
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(RuntimeError):
            _git("worktree", "prune")


# Imported by `python -m broker` / `-m edge` run in a worktree: which file each module came from.
_WHERE_FROM = (
    "import json, sys, broker.__main__, edge.__main__\n"
    "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()}))"
)


def check_imports_from(tree: Path) -> None:
    """Make sure processes started in `tree` import roomcast from it, none of it from here.

    The working directory comes first on `sys.path` for `python -m`, ahead of the
    editable install's finder; a package the old commit lacks would still come
    from the current checkout, silently mixing two versions.
    """
    done = subprocess.run([sys.executable, "-c", _WHERE_FROM], cwd=tree,
                          env=_clean_env(OURS_ENV), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    if done.returncode:
        raise RuntimeError(f"importing broker and edge in {tree} failed:\n{done.stderr[-2000:]}")
    files: dict[str, str | None] = json.loads(done.stdout.splitlines()[-1])
    real = tree.resolve()
    elsewhere = [n for n, f in files.items() if n.partition(".")[0] in PACKAGES
                 and f and not Path(f).resolve().is_relative_to(real)]
    if elsewhere:
        raise RuntimeError(f"started in {tree}, these came from elsewhere: {sorted(elsewhere)}")


@contextlib.contextmanager
def running(name: str, cpus: CpuPlan, logs: Path) -> Iterator[ServerSet]:
    """Start the design `name`; stop every process it started on the way out."""
    design, ref = parse_name(name)
    transport, description, start = _DESIGNS[design]
    with contextlib.ExitStack() as stack:
        shards = shard_count(name)
        if design in (OURS, OURS_MEMORY):
            edges = edge_count(name, cpus)
            start = functools.partial(_start_ours, shards=shards, durable=design == OURS,
                                      edges=edges)
            description = description.replace("E edges", f"{edges} edge{'s' * (edges > 1)}")
            if shards > 1:
                description = description.replace("1 broker", f"{shards} broker shards")
            if ref is not None:
                tree = stack.enter_context(worktree(ref))
                check_imports_from(tree)
                start = functools.partial(start, cwd=tree)
                commit = _git("-C", str(tree), "rev-parse", "--short", "HEAD")
                description = f"{description}; commit {commit}"
        servers = ServerSet(name, transport, description)
        try:
            start(_Spawner(cpus, logs, servers))
            yield servers
        finally:
            for proc in reversed(servers.procs):
                proc.stop()
            if servers.data_dir is not None:
                try:
                    with contextlib.suppress(sqlite3.Error):  # the run's figures still count
                        servers.store = store_figures(servers.data_dir)
                finally:
                    shutil.rmtree(servers.data_dir, ignore_errors=True)
