"""`chat-edge` / `python -m edge`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import sys
from collections.abc import Sequence

from chatconfig import EdgeSettings, parse
from chatconfig.eventloop import new_event_loop
from edge.server import serve


def _raise_fd_limit() -> None:
    """Each connection is a file descriptor: use all the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(EdgeSettings, argv, prog="chat-edge")
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _raise_fd_limit()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
