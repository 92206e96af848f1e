"""Command line shared by the Python reference servers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

MAX_ROOM_ID_CHARS = 128
MAX_MESSAGE_CHARS = 4096


def parse(argv: Sequence[str] | None, *, redis: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    if redis:
        parser.add_argument("--redis", required=True, help="redis://host:port/db")
    return parser.parse_args(argv)


def valid_room(room_id: object) -> str | None:
    """The room id if it is one protocol v1 accepts, else None."""
    if isinstance(room_id, str) and 1 <= len(room_id) <= MAX_ROOM_ID_CHARS:
        return room_id
    return None
