"""Settings out of range stop a real process before it opens any socket."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.procs import ROOT, env_with


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
