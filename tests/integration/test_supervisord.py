"""The shipped deploy/supervisord.conf: a round trip, supervisorctl, clean shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.procs import wait_until
from tests.support.supervisor import pid_alive, supervised_system, wait_gone
from tests.support.wsclient import WsClient


async def test_supervised_round_trip_and_clean_shutdown(tmp_path: Path) -> None:
    with supervised_system(tmp_path) as system:
        def all_running() -> bool:
            status = system.ctl("status")
            lines = status.stdout.strip().splitlines()
            return status.returncode == 0 and len(lines) == 4 and all(
                "RUNNING" in line for line in lines
            )

        wait_until(all_running, 15, "supervisorctl status: 4 RUNNING")
        pids = system.child_pids()
        assert len(pids) == 4
        a = await WsClient.connect(system.edges[0].url)
        b = await WsClient.connect(system.edges[2].url)
        try:
            await a.join("deploy")
            await b.join("deploy")
            await b.chat("across edges", "deploy")
            assert (await a.recv_chat())["message"] == "across edges"
        finally:
            await a.close()
            await b.close()
        system.popen.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert system.popen.wait(30) == 0
        wait_gone(pids)
        assert not any(pid_alive(p) for p in pids)
        log = (tmp_path / "deploy" / "supervisord.log").read_text()
        assert "stopped: edge-0" in log and "stopped: broker" in log
