"""What a broker's store holds and takes on disk, read once the broker has stopped.

The broker holds its store with an exclusive lock while it runs, so this is
read after it exits (it checkpoints and removes its write-ahead log on the
way out; whatever is left is counted too).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from broker.store import FILE_NAME


def disk_bytes(directory: Path) -> int:
    """Blocks allocated to every file in `directory` (an LMDB file is sparse)."""
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir() if p.is_file())


def store_figures(directory: Path) -> dict[str, Any] | None:
    """Bytes on disk, chats and rows the store in `directory` holds; None if it has none."""
    path = directory / FILE_NAME
    if not path.is_file():
        return None  # a broker that keeps no store (memory only, or a commit before them)
    size = disk_bytes(directory)  # before opening it makes a write-ahead log again
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows, chats = db.execute(
            "SELECT count(*), coalesce(sum(high - low + 1), 0) FROM chats").fetchone()
        rooms = db.execute("SELECT count(*) FROM streams").fetchone()[0]
    return {"disk_bytes": size, "chats": chats, "rows": rows, "rooms": rooms,
            "bytes_per_1000_chats": round(1000 * size / chats) if chats else None}
