"""`chat-bench churn --presence`: the option, the share it becomes, the URL it connects to."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from bench import rawclient
from bench.__main__ import _params, main, parser
from bench.clients import as_user
from bench.plan import Share


def test_presence_is_off_unless_asked_for() -> None:
    assert _params(parser().parse_args(["churn"])).presence is False
    assert _params(parser().parse_args(["churn", "--presence"])).presence is True
    assert _params(parser().parse_args(["fanout"])).presence is False


@pytest.mark.parametrize("command", ["fanout", "latency", "scale", "all", "smoke"])
def test_only_churn_takes_presence(command: str) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([command, "--presence"])


def test_a_share_carries_presence_to_its_generator() -> None:
    share = Share(mode="churn", transport="ws", urls=("ws://127.0.0.1:1/",), prefix="b1-churn-",
                  rooms=(0, 2), members=1, senders=2, presence=True)
    assert Share.from_line(share.to_line()) == share
    assert Share.from_line(share.to_line()).presence is True


def test_references_are_skipped_with_a_note(tmp_path: Path) -> None:
    # Nothing is started: the only server named has no presence.
    assert main(["churn", "--presence", "--servers", "node", "--quiet", "--no-pin",
                 "--out", str(tmp_path)]) == 0
    [report] = tmp_path.glob("*-churn.json")
    session = json.loads(report.read_text())
    assert session["runs"] == []
    assert "presence" in session["skipped"]["node"]
    assert session["params"]["presence"] is True


async def test_the_upgrade_request_claims_the_user_and_name() -> None:
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def upgrade(request: web.Request) -> web.WebSocketResponse:
        seen.set_result(request.query_string)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", upgrade)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        conn = await rawclient.connect(as_user(f"ws://127.0.0.1:{port}/", "b1-churner 3", "é&x"),
                                       lambda data: None)
        query = parse_qs(await asyncio.wait_for(seen, 5.0))
        await conn.close()
    finally:
        await runner.cleanup()
    assert query == {"user": ["b1-churner 3"], "name": ["é&x"]}
    assert urlsplit(as_user("ws://h:1/", "u", "n")).path == "/"
