"""Publish into rooms straight through the broker, from any backend process.

    link = BrokerLink(BrokerEndpoints("tcp://127.0.0.1:5559", "tcp://127.0.0.1:5560"))
    with Publisher.open(link, sender="ticker") as pub:
        pub.publish("prices", "SOL 142.17")

The link (addresses, high-water mark, CURVE keys) is the same
`chatconfig.BrokerLink` the edges use, so a publisher reads the same
`--broker-pub`/`CHAT_BROKER_PUB` (or `--broker-shards`) settings as they do.
With several broker shards it connects to each, and sends each room's chats
to the room's shard (`protocol.shards.shard_of`), as the edges do.

A message published here is the same bytes an edge publishes for a chat
(`protocol.codec.encode_chat`), so every edge forwards it unchanged to the
room's members.

A freshly connected ZeroMQ PUB drops what it sends until the broker's
subscription has reached it, silently. So before it is used, a publisher
proves its path live the way an edge does: it subscribes to its own probe
topic and publishes probes on it until one comes back through the broker
(through every shard).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import zmq

from chatconfig import DEFAULT_SENDER, BrokerLink, PublisherSettings
from chatconfig.curve import apply_client, client_keys
from protocol.chats import check_chat
from protocol.codec import encode_chat
from protocol.ids import Sequence, new_instance_id
from protocol.shards import REFUSAL_MARK, read_refusal, shard_of
from protocol.topics import edge_topic, parse_probe, probe_body, room_topic

PROBE_EVERY = 0.05  # seconds between probes while the path is not yet proven
_DEFAULTS = PublisherSettings()
DEFAULT_LINK = _DEFAULTS.broker
LIVE_TIMEOUT = _DEFAULTS.live_timeout


class Publisher:
    def __init__(
        self,
        link: BrokerLink = DEFAULT_LINK,
        *,
        sender: str = DEFAULT_SENDER,
        max_message_chars: int = _DEFAULTS.max_message_chars,
    ) -> None:
        """Connect (without waiting); call `wait_live` before the first `publish`.

        `sender` becomes the `from` of every message. With CURVE on the broker,
        `link.curve` names this process's `.key_secret` file and the broker's `.key` file.
        """
        self.sender = sender
        self.max_message_chars = max_message_chars
        self.instance_id = new_instance_id()
        self._ids = Sequence(self.instance_id, "-")
        self._probe_topic = edge_topic(self.instance_id)
        self._token = 0
        self.live = False
        self.published = 0
        self._ctx: zmq.Context[Any] = zmq.Context()
        shards = link.shards()
        self.shards = len(shards)
        self._pubs: list[zmq.Socket[bytes]] = []
        self._subs: list[zmq.Socket[bytes]] = []
        try:
            curve = client_keys(link.curve.curve_secret_key, link.curve.curve_broker_key)
            for shard in shards:
                pub: zmq.Socket[bytes] = self._ctx.socket(zmq.PUB)
                sub: zmq.Socket[bytes] = self._ctx.socket(zmq.SUB)
                self._pubs.append(pub)
                self._subs.append(sub)
                for sock in (pub, sub):
                    sock.setsockopt(zmq.SNDHWM, link.endpoints.hwm)
                    sock.setsockopt(zmq.RCVHWM, link.endpoints.hwm)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.RECONNECT_IVL, 100)
                    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
                    if curve is not None:
                        apply_client(sock, *curve)
                sub.setsockopt(zmq.SUBSCRIBE, self._probe_topic)
                pub.connect(shard.pub)
                sub.connect(shard.sub)
        except BaseException:
            self._ctx.destroy(linger=0)
            raise

    @classmethod
    def open(
        cls,
        link: BrokerLink = DEFAULT_LINK,
        *,
        timeout: float = LIVE_TIMEOUT,
        **kwargs: Any,
    ) -> Publisher:
        """Connect and wait until the broker path is live."""
        publisher = cls(link, **kwargs)
        try:
            publisher.wait_live(timeout)
        except BaseException:
            publisher.close(linger=0)
            raise
        return publisher

    @classmethod
    def from_settings(cls, settings: PublisherSettings, *, sender: str) -> Publisher:
        """`open` as a command's settings say: link, message limit, time to go live."""
        return cls.open(
            settings.broker, timeout=settings.live_timeout, sender=sender,
            max_message_chars=settings.max_message_chars,
        )

    def wait_live(self, timeout: float = LIVE_TIMEOUT) -> float:
        """Probe every broker shard until a probe comes back through each; return the
        slowest round trip in seconds.

        Call it again after a broker restart to know when publishing works again.
        From asyncio code: `await asyncio.to_thread(publisher.wait_live)`.
        """
        deadline = time.monotonic() + timeout
        sent: dict[int, float] = {}
        waiting = set(range(self.shards))
        slowest = 0.0
        poller = zmq.Poller()
        for sub in self._subs:
            poller.register(sub, zmq.POLLIN)
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"broker path not live within {timeout:g} s (shards not answering: "
                    f"{', '.join(str(i) for i in sorted(waiting))})"
                )
            for shard in waiting:
                self._token += 1
                sent[self._token] = now
                self._pubs[shard].send_multipart(
                    (self._probe_topic, probe_body(self.instance_id, self._token, self.shards)),
                    zmq.NOBLOCK,
                )
            wait_until = min(deadline, now + PROBE_EVERY)
            while (left := wait_until - time.monotonic()) > 0:
                ready = dict(poller.poll(max(1, int(left * 1000))))
                for shard, sub in enumerate(self._subs):
                    if sub not in ready:
                        continue
                    _, body = sub.recv_multipart()
                    if body[:1] == REFUSAL_MARK:
                        raise ConnectionRefusedError(
                            f"broker shard {shard} refused: {read_refusal(body)}"
                        )
                    parsed = parse_probe(body)
                    if parsed is not None and parsed[0] == self.instance_id and parsed[1] in sent:
                        slowest = max(slowest, time.monotonic() - sent[parsed[1]])
                        waiting.discard(shard)
                if not waiting:
                    self.live = True
                    return slowest

    def publish(self, room_id: str, message: str, *, sender: str | None = None) -> str:
        """Publish a chat to every member of `room_id` on every edge; return its id.

        Never blocks: ZeroMQ queues the message (and drops it at the high-water
        mark, or while the broker is unreachable).
        """
        # The same rules as a chat sent through an edge. The path is not
        # known here: ZeroMQ queues while the broker is away (see wait_live).
        refused = check_chat(room_id, message, self.max_message_chars, path_up=True)
        if refused is not None:
            raise ValueError(refused.text)
        message_id = self._ids.next()
        body = encode_chat(
            room_id, message, message_id, sender or self.sender, time.time_ns() // 1_000_000
        )
        self._pubs[shard_of(room_id, self.shards)].send_multipart(
            (room_topic(room_id), body), zmq.NOBLOCK
        )
        self.published += 1
        return message_id

    def close(self, linger: float = 1.0) -> None:
        """Close, first giving queued messages up to `linger` seconds to leave."""
        if self._ctx.closed:
            return
        for pub in self._pubs:
            pub.close(linger=int(linger * 1000))
        for sub in self._subs:
            sub.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
