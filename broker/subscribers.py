"""Who subscribes to what on the broker's XPUB side: libzmq's filter, kept in Python.

A subscriber (an edge's SUB socket, or any tool's) subscribes to topic
prefixes; a message goes to every subscriber with a subscription that is a
prefix of its topic, once. As with libzmq's XPUB, subscriptions are a set
per subscriber (a SUB counts its own duplicates and sends only the first
subscribe and the last cancel), and the owner hears of a topic's first
subscriber and of its last one leaving, whether by a cancel or by going
away: the sequencer keeps a room whose topic has subscribers.

Pure: the subscribers are whatever objects the caller hands in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)

# Topics whose subscribers are remembered; past this the memo starts again,
# so a stream of one-off topics cannot grow it without bound.
MEMO_LIMIT = 65_536


class Subscribers(Generic[P]):
    def __init__(self) -> None:
        self._by_topic: dict[bytes, set[P]] = {}
        self._by_peer: dict[P, set[bytes]] = {}
        self._lengths: Counter[int] = Counter()  # subscribed prefixes, by length
        self._sizes: tuple[int, ...] = ()  # the lengths in use, shortest first
        # topic -> its subscribers: a room's chats come on one topic, and one
        # dict lookup is cheaper than trying every prefix length each time
        self._memo: dict[bytes, tuple[P, ...]] = {}

    def __len__(self) -> int:
        """Prefixes with at least one subscriber."""
        return len(self._by_topic)

    def subscribe(self, peer: P, prefix: bytes) -> bool:
        """Add a subscription; True if it is the prefix's first subscriber."""
        mine = self._by_peer.setdefault(peer, set())
        if prefix in mine:
            return False
        mine.add(prefix)
        peers = self._by_topic.get(prefix)
        self._memo.clear()
        if peers is not None:
            peers.add(peer)
            return False
        self._by_topic[prefix] = {peer}
        self._count(len(prefix), 1)
        return True

    def cancel(self, peer: P, prefix: bytes) -> bool:
        """Remove a subscription; True if it was the prefix's last subscriber."""
        mine = self._by_peer.get(peer)
        if mine is None or prefix not in mine:
            return False
        mine.discard(prefix)
        return self._release(peer, prefix)

    def drop(self, peer: P) -> list[bytes]:
        """A subscriber gone: the prefixes it was the last subscriber of."""
        mine = self._by_peer.pop(peer, None)
        if not mine:
            return []
        return [prefix for prefix in mine if self._release(peer, prefix)]

    def matching(self, topic: bytes) -> tuple[P, ...]:
        """Every subscriber with a subscription that is a prefix of `topic`, once each."""
        found = self._memo.get(topic)
        if found is not None:
            return found
        by_topic = self._by_topic
        size = len(topic)
        peers: set[P] = set()
        for length in self._sizes:
            if length > size:
                break
            subscribed = by_topic.get(topic[:length])
            if subscribed is not None:
                peers |= subscribed
        found = tuple(peers)
        memo = self._memo
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        memo[topic] = found
        return found

    def _release(self, peer: P, prefix: bytes) -> bool:
        peers = self._by_topic[prefix]
        peers.discard(peer)
        self._memo.clear()
        if peers:
            return False
        del self._by_topic[prefix]
        self._count(len(prefix), -1)
        return True

    def _count(self, length: int, change: int) -> None:
        lengths = self._lengths
        lengths[length] += change
        if lengths[length] <= 0:
            del lengths[length]
        self._sizes = tuple(sorted(lengths))
