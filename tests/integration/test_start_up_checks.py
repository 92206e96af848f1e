"""Settings out of range stop a real process before it opens any socket."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bench.servers import free_port
from tests.support.procs import ROOT, env_with, wait_until


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env_with(env), capture_output=True,
        text=True, timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["-m", "edge", "--heartbeat", "0"], None,
         "chat-edge: error: --heartbeat (CHAT_HEARTBEAT) must be greater than 0, got 0.0"),
        (["-m", "edge"], {"CHAT_PROBE_INTERVAL": "2", "CHAT_PROBE_TIMEOUT": "1"},
         "--probe-timeout (CHAT_PROBE_TIMEOUT) must be greater than --probe-interval"),
        (["-m", "broker", "--broker-pub", "tcp://127.0.0.1:0"], None,
         "chat-broker: error: --broker-pub (CHAT_BROKER_PUB) must be a ZeroMQ endpoint"),
        (["-m", "broker"], {"CHAT_CURVE_SECRET_KEY": "broker.key_secret"},
         "--curve-secret-key (CHAT_CURVE_SECRET_KEY) needs --curve-allowed (CHAT_CURVE_ALLOWED)"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_flag(
    args: list[str], env: dict[str, str] | None, message: str
) -> None:
    done = run(args, env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("usage: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broker_that_cannot_bind_says_which_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(["-m", "broker", "--broker-pub", f"tcp://127.0.0.1:{port}",
                    "--broker-sub", f"tcp://127.0.0.1:{free_port()}"])
    assert done.returncode == 1, done.stderr
    assert f"chat-broker: cannot bind tcp://127.0.0.1:{port}: Address already in use" \
        in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broker_makes_its_unix_sockets_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run" / "roomcast"
    broker = subprocess.Popen(
        [sys.executable, "-m", "broker", "--broker-pub", f"ipc://{run_dir}/pub",
         "--broker-sub", f"ipc://{run_dir}/sub"],
        cwd=ROOT, env=env_with(None), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: (run_dir / "sub").is_socket() or broker.poll() is not None, 15,
                   "the broker's ipc sockets")
        assert broker.poll() is None, broker.communicate()[1]
        assert (run_dir / "pub").is_socket()
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    finally:
        broker.terminate()
        broker.wait(10)
