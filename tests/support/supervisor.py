"""The shipped deploy/supervisord.conf, run for real with overridden ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import ROOT, Edge, Proc, env_with, free_port, wait_until

EDGES = 3


def free_port_run(n: int) -> int:
    """A first port such that it and the n-1 after it are free."""
    for _ in range(200):
        base = free_port()
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            import socket

            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports")


@dataclass
class Supervised:
    conf: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes]
    edges: list[Edge]

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_bin("supervisorctl"), "-c", str(self.conf), *args],
            env=self.env, capture_output=True, text=True, timeout=30,
        )

    def child_pids(self) -> list[int]:
        out = self.ctl("pid", "all").stdout.split()
        return [int(p) for p in out if p.isdigit() and int(p) > 0]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not running; it only waits for its parent to reap it.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


@contextlib.contextmanager
def supervised_system(tmp: Path, stdout: Path | None = None) -> Iterator[Supervised]:
    """Copy deploy/ verbatim to `tmp` (its runtime files land there) and run it.

    With `stdout`, supervisord's output goes to that file, opened as a shell's
    `> FILE` opens it (truncated, not in append mode).
    """
    deploy = tmp / "deploy"
    deploy.mkdir()
    conf = deploy / "supervisord.conf"
    shutil.copyfile(ROOT / "deploy" / "supervisord.conf", conf)
    base = free_port_run(EDGES)
    env = env_with({
        # Every broker slot's two ports (shard I: base + 2I and base + 2I + 1).
        "CHAT_BROKER_PORT": str(free_port_run(8)),
        # Shard I's /metrics: CHAT_BROKER_METRICS_PORT + I.
        "CHAT_BROKER_METRICS_PORT": str(free_port_run(4)),
        "CHAT_EDGE_PORT": str(base),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        # The installed chat-edge and chat-broker scripts must run this checkout's
        # code, wherever the package was installed from in editable mode.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    })
    with contextlib.ExitStack() as files:
        out = files.enter_context(stdout.open("wb")) if stdout else subprocess.DEVNULL
        popen = subprocess.Popen(
            [_bin("supervisord"), "-c", str(conf)], env=env, cwd=tmp,
            stdout=out, stderr=subprocess.DEVNULL,
        )
    edges = [Edge(base + i, Proc([], env)) for i in range(EDGES)]
    system = Supervised(conf, env, popen, edges)
    try:
        for edge in edges:
            wait_until(
                lambda e=edge: _running(popen, deploy) and e.health()[0] == 200,
                30, f"supervised edge :{edge.port} healthy",
            )
        yield system
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)


def _running(popen: subprocess.Popen[bytes], deploy: Path) -> bool:
    if popen.poll() is not None:
        log = deploy / "supervisord.log"
        text = log.read_text() if log.exists() else "(no log)"
        raise RuntimeError(f"supervisord exited with {popen.returncode}:\n{text}")
    return True


def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, "processes to exit")
