"""A generator process: `python -m bench.worker`, driven by the parent over stdin/stdout.

Lines in: the share (JSON), then `go`, then `exit`. Lines out (JSON):
`ready` after connecting and joining, `progress` twice a second while
running, and `result` at the end. Connections stay open until `exit`, so the
parent can read the servers' memory while they are held.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

from bench.clients import new_session
from bench.plan import Share
from bench.procstat import raise_fd_limit
from bench.workloads import Workload, make_workload

PROGRESS_EVERY = 0.5


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _report_progress(workload: Workload) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        emit("progress", **workload.progress())


async def serve() -> int:
    commands = await _stdin()
    share = Share.from_line((await commands.readline()).decode())
    async with new_session() as session:
        workload = make_workload(share, session)
        began = time.monotonic()
        try:
            await workload.setup()
        except Exception as exc:
            emit("failed", error=f"setup: {type(exc).__name__}: {exc}")
            await workload.close()
            return 1
        emit("ready", connect_start=began, connect_end=time.monotonic(),
             connections=len(workload.conns))
        # Setup made most of the objects this process will hold; keep the
        # collector from walking them again while latencies are measured.
        gc.collect()
        gc.freeze()
        if not await commands.readline():  # EOF instead of go: the parent is gone
            await workload.close()
            return 1
        ticker = asyncio.create_task(_report_progress(workload))
        try:
            await workload.run()
        finally:
            ticker.cancel()
        emit("result", **workload.result())
        await commands.readline()  # exit, or EOF if the parent is gone
        await workload.close()
    return 0


def main() -> int:
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve())
    code: int = uvloop.run(serve())
    return code


if __name__ == "__main__":
    sys.exit(main())
