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
    """Bytes on disk, chats and rows the store in `directory` holds; None if it has none.

    With broker shards, `directory` holds a store per shard (`shard-I/`):
    their sums.
    """
    stores = [d for d in (directory, *sorted(directory.glob("shard-*")))
              if (d / FILE_NAME).is_file()]
    if not stores:
        return None  # a broker that keeps no store (memory only, or a commit before them)
    size = rows = chats = rooms = 0
    for store in stores:
        size += disk_bytes(store)  # before opening it makes a write-ahead log again
        with contextlib.closing(sqlite3.connect(store / FILE_NAME)) as db:
            got_rows, got_chats = db.execute(
                "SELECT count(*), coalesce(sum(high - low + 1), 0) FROM chats").fetchone()
            rooms += db.execute("SELECT count(*) FROM streams").fetchone()[0]
        rows += got_rows
        chats += got_chats
    return {"disk_bytes": size, "chats": chats, "rows": rows, "rooms": rooms,
            "stores": len(stores),
            "bytes_per_1000_chats": round(1000 * size / chats) if chats else None}
