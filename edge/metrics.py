"""Counters kept as plain integers on the hot path, exported at scrape time.

prometheus-client's own Counter takes a lock per increment; an edge counts
every delivery, so it keeps ints and hands them to a custom collector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class Stats:
    __slots__ = (
        "connections_total",
        "disconnects",
        "errors",
        "messages_in",
        "messages_out",
        "probes_sent",
        "refused",
    )

    def __init__(self) -> None:
        self.messages_in = 0  # chats accepted from clients of this edge
        self.messages_out = 0  # frames of chat delivered to local members
        self.connections_total = 0
        self.probes_sent = 0
        self.refused: Counter[int] = Counter()  # WebSocket upgrades refused, by HTTP status
        self.errors: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()


class EdgeCollector(Collector):
    def __init__(
        self,
        stats: Stats,
        gauges: Callable[[], dict[str, float]],
        counters: Callable[[], dict[str, tuple[str, float]]] = dict,
        shard_gauges: Callable[[], dict[str, list[float]]] = dict,
    ) -> None:
        self.stats = stats
        self.gauges = gauges
        self.shard_gauges = shard_gauges  # name -> one value per broker shard
        self.counters = counters  # kept by their owners: name -> (help, value)

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        docs = {
            "chat_connections": "open WebSocket connections",
            "chat_rooms": "rooms with at least one member on this edge",
            "chat_subscriptions": "room topics this edge subscribes to at the broker",
            "chat_pending_rooms": "rooms whose subscription is not yet proven live",
            "chat_broker_up": "1 while the broker shard's round-trip probes come back in time",
            "chat_broker_rtt_seconds": "round-trip time of the last probe of the broker shard",
        }
        for name, value in self.gauges().items():
            yield GaugeMetricFamily(name, docs.get(name, name), value=value)
        for name, values in self.shard_gauges().items():
            family = GaugeMetricFamily(name, docs.get(name, name), labels=["shard"])
            for shard, v in enumerate(values):
                family.add_metric([str(shard)], v)
            yield family
        for name, (text, count) in self.counters().items():
            yield CounterMetricFamily(name, text, value=count)
        yield CounterMetricFamily(
            "chat_messages_in", "chat messages accepted from clients", value=s.messages_in
        )
        yield CounterMetricFamily(
            "chat_messages_out", "chat frames delivered to members", value=s.messages_out
        )
        yield CounterMetricFamily(
            "chat_connections_opened", "WebSocket connections accepted", value=s.connections_total
        )
        errors = CounterMetricFamily(
            "chat_errors", "error frames sent to clients, by code", labels=["code"]
        )
        for code, n in sorted(s.errors.items()):
            errors.add_metric([code], n)
        yield errors
        disconnects = CounterMetricFamily(
            "chat_disconnects", "connections closed, by reason", labels=["reason"]
        )
        for reason, n in sorted(s.disconnects.items()):
            disconnects.add_metric([reason], n)
        yield disconnects
        refused = CounterMetricFamily(
            "chat_upgrades_refused",
            "WebSocket upgrades refused, by HTTP status (401 token, 403 origin, 429 per-IP"
            " cap, 503 not ready or full, 400/426/431 malformed)",
            labels=["status"],
        )
        for status, n in sorted(s.refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
