"""The shipped deploy/supervisord.conf: a round trip, supervisorctl, clean shutdown."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp

from tests.support.procs import wait_until
from tests.support.supervisor import pid_alive, supervised_system, wait_gone
from tests.support.wsclient import WsClient


async def test_supervised_round_trip_and_clean_shutdown(tmp_path: Path) -> None:
    with supervised_system(tmp_path) as system:
        def all_running() -> bool:
            # Two broker shards and three edges run; broker slots 2 and 3 are unused.
            status = system.ctl("status")
            lines = status.stdout.strip().splitlines()
            running = [line.split()[0] for line in lines if "RUNNING" in line]
            exited = [line.split()[0] for line in lines if "EXITED" in line]
            return (len(lines) == 7 and exited == ["broker:broker-2", "broker:broker-3"]
                    and running[:2] == ["broker:broker-0", "broker:broker-1"])

        wait_until(all_running, 15, "supervisorctl status: 5 RUNNING, 2 EXITED")
        pids = system.child_pids()
        assert len(pids) == 5
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
        # Each shard's /metrics, on its own port; the chat went through one of them.
        metrics = int(system.env["CHAT_BROKER_METRICS_PORT"])
        sequenced = {}
        for i in range(2):
            text = await _metrics(f"http://127.0.0.1:{metrics + i}/metrics")
            found = re.search(rf'^chat_broker_chats_sequenced_total{{shard="{i}/2"}} (\S+)$',
                              text, re.MULTILINE)
            assert found is not None, text
            sequenced[i] = float(found[1])
            assert f'chat_broker_store_bytes{{shard="{i}/2"}}' in text
        assert sorted(sequenced.values()) == [0.0, 1.0]
        system.popen.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert system.popen.wait(30) == 0
        wait_gone(pids)
        assert not any(pid_alive(p) for p in pids)
        log = (tmp_path / "deploy" / "supervisord.log").read_text()
        assert "stopped: edge-0" in log and "stopped: broker-1" in log
        # Each shard has its own store, beside the config.
        assert (tmp_path / "deploy" / "data" / "broker").is_dir()
        assert (tmp_path / "deploy" / "data" / "broker-1").is_dir()


async def _metrics(url: str, within: float = 15.0) -> str:
    """The page at `url`, asked again until the broker listens (it may still be starting)."""
    deadline = asyncio.get_running_loop().time() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(5)) as http:
        while True:
            try:
                async with http.get(url) as reply:
                    return await reply.text()
            except aiohttp.ClientConnectionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)  # polling a port that does not answer yet


# A whole line, from supervisord or from any child: both log in this format.
WHOLE_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S.*")


def test_output_redirected_to_a_file_keeps_every_line_whole(tmp_path: Path) -> None:
    # `supervisord -c deploy/supervisord.conf > run.log`: supervisord and every
    # child write into the same file, so none may write at a stale offset.
    run_log = tmp_path / "run.log"
    with supervised_system(tmp_path, stdout=run_log) as system:
        ports = [edge.port for edge in system.edges]
        wait_until(lambda: len(system.child_pids()) == 5, 15, "five children")
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

    for shard in ("0/2", "1/2"):
        assert count(rf" INFO broker: broker ready: shard {shard}, publishers -> "
                     r"tcp://127\.0\.0\.1:\d+, ") == 1
    assert count(r" INFO broker: broker stopping on SIGTERM$") == 2
    for port in ports:
        # edge-1 came up twice; every edge stopped cleanly at the end.
        assert count(rf" INFO edge: edge \w+ up on 127\.0\.0\.1:{port}$") == (
            2 if port == ports[1] else 1
        ), text
    assert count(r" INFO edge: stopping: no new connections") == 4
