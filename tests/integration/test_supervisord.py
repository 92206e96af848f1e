"""The shipped deploy/supervisord.conf: a round trip, supervisorctl, clean shutdown."""

from __future__ import annotations

import re
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


# A whole line, from supervisord or from any child: both log in this format.
WHOLE_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S.*")


def test_output_redirected_to_a_file_keeps_every_line_whole(tmp_path: Path) -> None:
    # `supervisord -c deploy/supervisord.conf > run.log`: supervisord and every
    # child write into the same file, so none may write at a stale offset.
    run_log = tmp_path / "run.log"
    with supervised_system(tmp_path, stdout=run_log) as system:
        ports = [edge.port for edge in system.edges]
        wait_until(lambda: len(system.child_pids()) == 4, 15, "four children")
        # A restart makes supervisord and the restarted edge write after the others did.
        restart = system.ctl("restart", "edge:edge-1")
        assert restart.returncode == 0, restart.stdout + restart.stderr
        system.edges[1].wait_healthy()
        system.popen.send_signal(signal.SIGINT)
        assert system.popen.wait(30) == 0
    text = run_log.read_text(errors="replace")
    lines = text.splitlines()
    broken = [line for line in lines if not WHOLE_LINE.fullmatch(line)]
    assert not broken, f"{len(broken)} broken line(s), e.g. {broken[:5]}\n{text}"
    assert text.endswith("\n") and "\0" not in text

    def count(pattern: str) -> int:
        return sum(1 for line in lines if re.search(pattern, line))

    assert count(r" INFO broker: broker ready: publishers -> tcp://127\.0\.0\.1:\d+, ") == 1
    assert count(r" INFO broker: broker stopping on SIGTERM$") == 1
    for port in ports:
        # edge-1 came up twice; every edge stopped cleanly at the end.
        assert count(rf" INFO edge: edge \w+ up on 127\.0\.0\.1:{port}$") == (
            2 if port == ports[1] else 1
        ), text
    assert count(r" INFO edge: stopping: no new connections") == 4
