"""`chat-publish --room R TEXT`: post into rooms through the broker, no WebSocket needed.

    chat-publish --room lobby "deploy finished"
    tail -f events.log | chat-publish --room ops -        # one message per line

The broker addresses default to CHAT_BROKER_PUB / CHAT_BROKER_SUB, like the
edges'. Each message id is printed on stdout, one per line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence

import zmq

from chatclient.publisher import DEFAULT_SENDER, LIVE_TIMEOUT, Publisher
from chatconfig import DEFAULT_BROKER_PUB, DEFAULT_BROKER_SUB, env_name
from chatconfig.curve import CurveKeyError


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="chat-publish",
        description="Publish messages into chat rooms through the broker.",
    )
    parser.add_argument("text", help="the message; `-` reads one message per line from stdin")
    parser.add_argument(
        "--room", action="append", required=True, help="room to publish to (repeatable)"
    )
    parser.add_argument(
        "--from", dest="sender", default=DEFAULT_SENDER,
        help=f"sender shown as `from` (default {DEFAULT_SENDER!r})",
    )
    parser.add_argument(
        "--broker-pub", default=env.get(env_name("broker_pub"), DEFAULT_BROKER_PUB),
        help="broker address for publishers [env CHAT_BROKER_PUB]",
    )
    parser.add_argument(
        "--broker-sub", default=env.get(env_name("broker_sub"), DEFAULT_BROKER_SUB),
        help="broker address for subscribers, used to prove the path live [env CHAT_BROKER_SUB]",
    )
    parser.add_argument(
        "--curve-secret-key", default="", help="this publisher's CURVE .key_secret file"
    )
    parser.add_argument("--curve-broker-key", default="", help="the broker's CURVE .key file")
    parser.add_argument(
        "--max-message-chars", type=int, default=4096, help="refuse longer messages"
    )
    parser.add_argument(
        "--timeout", type=float, default=LIVE_TIMEOUT,
        help="seconds to wait for the broker path to be live",
    )
    return parser


def _messages(text: str) -> Iterable[str]:
    if text != "-":
        yield text
        return
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if line:
            yield line


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        publisher = Publisher.open(
            args.broker_pub,
            args.broker_sub,
            timeout=args.timeout,
            sender=args.sender,
            max_message_chars=args.max_message_chars,
            curve_secret_key=args.curve_secret_key,
            curve_broker_key=args.curve_broker_key,
        )
    except (TimeoutError, OSError, ValueError, CurveKeyError, zmq.ZMQError) as exc:
        print(f"chat-publish: {exc}", file=sys.stderr)
        return 1
    status = 0
    with publisher:
        for message in _messages(args.text):
            for room in args.room:
                try:
                    print(publisher.publish(room, message), flush=True)
                except ValueError as exc:
                    print(f"chat-publish: {room!r}: {exc}", file=sys.stderr)
                    status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
