"""Round-trip probes through the broker, as pure bookkeeping.

"The socket is connected" proves little: a broker can accept connections and
still not forward. So an edge periodically publishes a probe on its own topic
and counts the broker path healthy only while those probes come back. (New
room subscriptions are probed the same way on the room's topic; their
tokens live with the room, in `edge.rooms`.)
"""

from __future__ import annotations

from protocol.topics import Probe, edge_topic, parse_probe, probe_body


class ProbeClock:
    def __init__(self, edge_id: str, interval: float, timeout: float, retry: float,
                 shards: int | None = None) -> None:
        self.edge_id = edge_id
        self.shards = shards  # told to the broker in each probe: it checks we agree
        self.interval = interval
        self.timeout = timeout
        self.retry = retry
        self.topic = edge_topic(edge_id)
        self._token = 0
        self._sent_at: dict[int, float] = {}
        self._last_sent = float("-inf")
        self.last_seen: float | None = None
        self.last_rtt: float | None = None

    # Health of the whole path.

    def healthy(self, now: float) -> bool:
        return self.last_seen is not None and now - self.last_seen < self.timeout

    def path_lost(self) -> None:
        """The transport reported the broker gone: unhealthy until a probe returns."""
        self.last_seen = None

    def health_probe_due(self, now: float) -> bytes | None:
        """A probe body to publish on `self.topic`, or None if not yet due."""
        # Until a probe has come back (start-up, broker down) probe at retry pace.
        pace = self.interval if self.healthy(now) else self.retry
        if now - self._last_sent < pace:
            return None
        self._last_sent = now
        self._token += 1
        self._sent_at[self._token] = now
        if len(self._sent_at) > 64:  # forget probes lost with a dead broker
            del self._sent_at[min(self._sent_at)]
        return probe_body(self.edge_id, self._token, self.shards)

    def own_probe(self, body: bytes) -> Probe | None:
        """A probe this edge sent, or None for anyone else's."""
        parsed = parse_probe(body)
        if parsed is None or parsed.edge_id != self.edge_id:
            return None
        return parsed

    def health_probe_returned(self, token: int, now: float) -> bool:
        """Record a returned health probe; True if the path was unhealthy until now."""
        recovered = not self.healthy(now)
        sent = self._sent_at.pop(token, None)
        if sent is not None:
            self.last_rtt = now - sent
        self.last_seen = now
        return recovered
