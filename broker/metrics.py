"""The broker's counters for Prometheus, read at scrape time (`--metrics-port`).

The loop keeps plain integers on the objects that own them (the sequencer,
the presence owner, the shard guard, the store, the keeper); a scrape reads
them from the HTTP server's thread. Reading an int is atomic in CPython, so
the loop takes no lock and pays nothing per chat beyond its own counting.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from broker.sharding import ShardGuard

if TYPE_CHECKING:
    from broker.server import Keeper
    from broker.zmtphub import ZmtpHub

log = logging.getLogger("broker.metrics")

# kind, name, help text, value
Reading = tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, float]


class BrokerCollector(Collector):
    def __init__(self, keeper: Keeper, guard: ShardGuard, shard: str,
                 hub: ZmtpHub | None = None) -> None:
        self.keeper = keeper
        self.guard = guard
        self.shard = shard  # "I/N": every family is labelled with it
        self.hub = hub  # None on libzmq's sockets, whose drops are not counted

    def collect(self) -> Iterator[Metric]:
        for kind, name, text, value in self._readings():
            family = kind(name, text, labels=["shard"])
            family.add_metric([self.shard], value)
            yield family

    def _readings(self) -> list[Reading]:
        keeper, guard = self.keeper, self.guard
        sequencer, presence, store = keeper.sequencer, keeper.presence, keeper.store
        counter, gauge = CounterMetricFamily, GaugeMetricFamily
        readings: list[Reading] = [
            (counter, "chat_broker_chats_sequenced",
             "chats given an offset, stored and forwarded since start", sequencer.sequenced),
            (counter, "chat_broker_duplicates",
             "chats with a msgId already sequenced: acknowledged again, not forwarded",
             sequencer.duplicates),
            (counter, "chat_broker_refused_chats",
             "chats refused with unavailable while the store took no writes", keeper.refused),
            (gauge, "chat_broker_refusing",
             "1 while the store takes no writes (disk full, say): chats are refused",
             int(keeper.refusing)),
            (counter, "chat_broker_malformed_parts",
             "message parts on a room's topic that were not a chat, a keyed chat, a query or "
             "a probe: dropped", sequencer.malformed),
            (counter, "chat_broker_shortened_dedupe_windows",
             "msgIds forgotten before --dedupe-window because the byte budget held nothing "
             "else", sequencer.shortened_windows),
            (counter, "chat_broker_other_shard_refusals",
             "messages for rooms of another shard, and probes counting another N, refused",
             guard.refused_rooms + guard.refused_probes),
            (gauge, "chat_broker_rooms", "rooms whose streams this broker holds", len(sequencer)),
            (gauge, "chat_broker_history_bytes",
             "bytes held by history and remembered msgIds, overheads included (bounded by "
             "--history-bytes)", sequencer.held_bytes),
            (gauge, "chat_broker_presence_members",
             "users tracked in the presence of this broker's rooms", presence.members),
            (counter, "chat_broker_presence_over_budget",
             "users not tracked: the presence member limit was reached", presence.over_budget),
            (counter, "chat_broker_presence_malformed",
             "presence reports that broke the rules: ignored", presence.malformed),
        ]
        if self.hub is not None:
            readings.append((counter, "chat_broker_subscriber_dropped",
                             "messages not forwarded to a subscriber that had more than "
                             "--hwm messages' worth of bytes unsent (its edge repairs chats "
                             "from history)", self.hub.dropped))
        if store is not None:
            readings.append((counter, "chat_broker_store_log_rewinds",
                             "times the store's write-ahead log was rewound", store.rewinds))
            # A file gone between listing and reading it: the next scrape has it.
            readings.append((gauge, "chat_broker_store_unwritten_bytes",
                             "bytes of the store's commit log not yet written to its file",
                             store.unwritten()))
            with contextlib.suppress(OSError):
                readings.append((gauge, "chat_broker_store_bytes",
                                 "the store's files on disk, commit log and write-ahead log "
                                 "included", store.size()))
        return readings


def serve(collector: BrokerCollector, host: str, port: int) -> None:
    """/metrics on host:port, from a thread of the HTTP server's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
