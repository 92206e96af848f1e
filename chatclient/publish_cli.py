"""`chat-publish --room R TEXT`: post into rooms through the broker, no WebSocket needed.

    chat-publish --room lobby "deploy finished"
    tail -f events.log | chat-publish --room ops -        # one message per line

Settings are flags with CHAT_* fallbacks (chatconfig.PublishSettings); the
broker link is the edges' own (CHAT_BROKER_PUB, CHAT_BROKER_SUB, CURVE keys).
Each message id is printed on stdout, one per line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import zmq

from chatclient.publisher import Publisher
from chatconfig import PublishSettings, parse
from chatconfig.curve import CurveKeyError


def _messages(text: str) -> Iterable[str]:
    if text != "-":
        yield text
        return
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if line:
            yield line


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(PublishSettings, argv, prog="chat-publish")
    try:
        publisher = Publisher.from_settings(settings.publisher, sender=settings.sender)
    except (TimeoutError, OSError, ValueError, CurveKeyError, zmq.ZMQError) as exc:
        print(f"chat-publish: {exc}", file=sys.stderr)
        return 1
    status = 0
    with publisher:
        for message in _messages(settings.text):
            for room in settings.room:
                try:
                    print(publisher.publish(room, message), flush=True)
                except ValueError as exc:
                    print(f"chat-publish: {room!r}: {exc}", file=sys.stderr)
                    status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
