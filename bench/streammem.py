"""What the broker's history and dedupe window cost per chat, measured in process.

Feeds `broker.streams.Sequencer` typical chats (the bytes an edge publishes:
`protocol.codec.encode_chat` with a 36-character text, ids and a sender as
edges make them) and counts, with tracemalloc, the Python memory the
sequencer holds afterwards: history alone (chats without msgId), then
history plus the dedupe window (each chat with a UUID msgId, as clients
are told to use). Limits are set so that nothing is trimmed.

    .venv/bin/python -m bench.streammem [--chats 100000] [--rooms 1]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
import uuid

from broker.streams import Limits, Sequencer
from protocol.codec import encode_chat
from protocol.stream import dedupe_key, keyed_part
from protocol.topics import edge_topic, room_topic

TEXT = "see you at the standup in ten minutes"[:36]


def typical(room_id: str, i: int, msg_id: str | None) -> bytes:
    return encode_chat(
        room_id, TEXT, f"mwwnqoc944b258-{i:x}", "mwwnqoc944b258.3", 1764107421337 + i, msg_id
    )


def measure(chats: int, rooms: int, with_msg_ids: bool) -> tuple[int, int]:
    """(bytes held by the sequencer after `chats` chats, stamped bytes of one chat)."""
    limits = Limits(chats, 1e9, 1 << 40, 1e9)
    origin = edge_topic("mwwnqoc944b258")
    topics = [room_topic(f"room-{r}") for r in range(rooms)]
    parts = []
    for i in range(chats):
        room_id = f"room-{i % rooms}"
        if with_msg_ids:
            msg_id = str(uuid.uuid4())
            parts.append(keyed_part(origin, dedupe_key(msg_id, None), typical(room_id, i, msg_id)))
        else:
            parts.append(typical(room_id, i, None))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sequencer = Sequencer(limits)
    sample = b""
    for i, part in enumerate(parts):
        out = sequencer.sequence(topics[i % rooms], [part], float(i) / 1000)
        assert out is not None
        sample = out.forward[0]
    out = None
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert sum(len(s.history) for s in sequencer.streams()) == chats
    return held, len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=1)
    args = parser.parse_args()
    plain, size = measure(args.chats, args.rooms, False)
    keyed, keyed_size = measure(args.chats, args.rooms, True)
    n = args.chats
    print(f"{n:,} chats in {args.rooms:,} room(s)")
    print(f"history, no msgId: {plain / n:.0f} B per chat ({size} B stamped chat, "
          f"{plain / n - size:.0f} B besides its bytes); {plain / 2**20:.1f} MiB in all")
    print(f"history + msgId:   {keyed / n:.0f} B per chat ({keyed_size} B stamped chat); "
          f"the dedupe window adds {(keyed - plain) / n - (keyed_size - size):.0f} B per msgId")


if __name__ == "__main__":
    main()
