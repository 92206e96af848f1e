"""The broker's /metrics collector, on a sequencer and presence owner without sockets."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from broker.metrics import BrokerCollector
from broker.presence import PresenceLimits, PresenceOwner
from broker.server import Keeper
from broker.sharding import ShardGuard
from broker.store import open_store
from broker.streams import Limits, Sequencer
from protocol.codec import encode_chat
from protocol.stream import keyed_part, pack
from protocol.topics import room_topic

LIMITS = Limits(history_size=5, history_ttl=60.0, history_bytes=1 << 20, dedupe_window=120.0)
ORIGIN = b"eEDGE\x00"


def chat(text: str, msg_id: str | None = None) -> bytes:
    return encode_chat("r", text, "id-" + text, "u", 1, msg_id)


def scrape(keeper: Keeper, guard: ShardGuard, shard: str = "1/2") -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(keeper, guard, shard))
    text = generate_latest(registry).decode()
    values = {}
    for name, labels, value in re.findall(r"^(\w+)\{(.*)\} (\S+)$", text, re.MULTILINE):
        assert labels == f'shard="{shard}"', labels
        values[name] = float(value)
    return values


def test_counts_what_the_sequencer_did_labelled_with_the_shard() -> None:
    keeper = Keeper(Sequencer(LIMITS), None, PresenceOwner(PresenceLimits(), 0.0))
    guard = ShardGuard(1, 2)
    before = scrape(keeper, guard)
    assert before["chat_broker_chats_sequenced_total"] == 0
    assert before["chat_broker_rooms"] == 0
    assert "chat_broker_store_bytes" not in before  # history in memory only: no store

    seq = keeper.sequencer
    seq.sequence(room_topic("a"), [chat("1"), pack([chat("2"), chat("3")])], 0.0)
    seq.sequence(room_topic("b"), [keyed_part(ORIGIN, "k", chat("4", "k"))], 0.0)
    seq.sequence(room_topic("b"), [keyed_part(ORIGIN, "k", chat("4", "k"))], 1.0)  # again
    seq.sequence(room_topic("b"), [b"not a part of any kind"], 1.0)
    keeper.refused += 2
    after = scrape(keeper, guard)
    assert after["chat_broker_chats_sequenced_total"] == 4
    assert after["chat_broker_duplicates_total"] == 1
    assert after["chat_broker_malformed_parts_total"] == 1
    assert after["chat_broker_refused_chats_total"] == 2
    assert after["chat_broker_refusing"] == 0
    assert after["chat_broker_rooms"] == 2
    assert after["chat_broker_history_bytes"] == seq.held_bytes > 0
    assert after["chat_broker_presence_members"] == 0


def test_the_store_s_commit_log_and_files_are_measured(tmp_path: Path) -> None:
    store, seq = open_store(str(tmp_path), LIMITS, 0.0)
    keeper = Keeper(seq, store, PresenceOwner(PresenceLimits(), 0.0))
    guard = ShardGuard(0, 1)
    turn = [[room_topic("a"), chat("1")]]
    seq.sequence(turn[0][0], turn[0][1:], 0.0)
    with store._writing:  # the store's thread waits: the turn stays in the log
        keeper.commit(turn, [], 0.0)
        unwritten = scrape(keeper, guard, "0/1")["chat_broker_store_unwritten_bytes"]
    assert unwritten > len(chat("1"))
    store.apply()
    after = scrape(keeper, guard, "0/1")
    assert after["chat_broker_store_unwritten_bytes"] == 0
    # The commit log's reserved segment is counted with SQLite's files.
    assert after["chat_broker_store_bytes"] >= 4 * 1024 * 1024
    store.close()
