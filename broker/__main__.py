"""`chat-broker` / `python -m broker`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from broker.server import run
from chatconfig import BrokerSettings, parse


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(BrokerSettings, argv, prog="chat-broker")
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
