"""Token buckets, the abuse close and the per-IP cap, on an injected clock."""

from __future__ import annotations

import json

import pytest

from edge.ratelimit import (
    PATIENCE,
    QUIET,
    ConcurrencyCap,
    ConnectionLimits,
    TokenBucket,
    limits_factory,
)
from edge.rooms import RoomRegistry
from edge.session import ABUSE_CLOSE, Client, Close, FrameHandler, Intent, Publish, Reply
from protocol.ids import Sequence


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_burst_then_refused() -> None:
    clock = Clock()
    bucket = TokenBucket(20, 40, clock)
    assert all(bucket.take() for _ in range(40))
    assert not bucket.take()
    assert bucket.over_since == clock.now


def test_refills_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 5, clock)
    for _ in range(5):
        assert bucket.take()
    assert not bucket.take()
    clock.advance(0.1)  # one token
    assert bucket.take()
    assert not bucket.take()
    clock.advance(100)  # capped at the burst
    assert sum(bucket.take() for _ in range(10)) == 5


def test_steady_rate_is_never_refused() -> None:
    clock = Clock()
    bucket = TokenBucket(20, 40, clock)
    for _ in range(1000):
        assert bucket.take()
        clock.advance(0.05)
    assert bucket.over_since is None


def test_sustained_flood_becomes_abusive_after_patience() -> None:
    clock = Clock()
    bucket = TokenBucket(20, 40, clock)
    start = None
    while True:
        ok = bucket.take()
        if not ok and start is None:
            start = clock.now
        if not ok and bucket.abusive():
            break
        assert clock.now - 1000 < 60, "never became abusive"
        clock.advance(0.01)  # 100 a second, five times the rate
    assert start is not None
    assert clock.now - start == pytest.approx(PATIENCE, abs=0.02)


def test_moderate_overrun_still_counts() -> None:
    clock = Clock()
    bucket = TokenBucket(20, 40, clock)
    # 25 a second: most pass, a few are refused, but the refusals never stop.
    abusive = False
    for _ in range(25 * 20):
        if not bucket.take() and bucket.abusive():
            abusive = True
            break
        clock.advance(0.04)
    assert abusive


def test_a_pause_forgives() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 10, clock)
    for _ in range(4):  # bursts of refusals, each followed by a quiet spell
        while bucket.take():
            pass
        clock.advance(QUIET + 0.5)
        assert bucket.take()
        clock.advance(2.0)
    assert not bucket.abusive()


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 10, Clock())
    with pytest.raises(ValueError):
        TokenBucket(1, 0, Clock())


def test_limits_factory() -> None:
    clock = Clock()
    assert limits_factory(0, 40, 10, 20, clock)() is None
    limits = limits_factory(20, 40, 0, 20, clock)()
    assert limits is not None and limits.chat is not None and limits.membership is None
    limits = limits_factory(20, 40, 10, 20, clock)()
    assert limits is not None and limits.membership is not None
    assert limits.membership.burst == 20


def test_concurrency_cap() -> None:
    cap: ConcurrencyCap[str] = ConcurrencyCap(2)
    assert cap.acquire("1.2.3.4") and cap.acquire("1.2.3.4")
    assert not cap.acquire("1.2.3.4")
    assert cap.acquire("5.6.7.8")
    cap.release("1.2.3.4")
    assert cap.acquire("1.2.3.4")
    for _ in range(3):
        cap.release("1.2.3.4")
    assert cap.count("1.2.3.4") == 0
    unlimited: ConcurrencyCap[str] = ConcurrencyCap(0)
    assert all(unlimited.acquire("x") for _ in range(10_000))


# The pure handler applies the buckets.


CLIENTS: dict[str, Client] = {}


def make(clock: Clock, chat: tuple[float, int], join: tuple[float, int]) -> FrameHandler[str]:
    for m in ("flooder", "calm"):
        limits = ConnectionLimits(TokenBucket(*chat, clock), TokenBucket(*join, clock))
        CLIENTS[m] = Client(m, None, limits)
    return FrameHandler(RoomRegistry(32), Sequence("e", "-"), lambda: 1, 100)


def codes(intents: list[Intent]) -> list[str]:
    out = []
    for i in intents:
        if isinstance(i, Reply):
            out.append(json.loads(i.frame).get("payload", {}).get("code", "ok"))
        else:
            out.append(type(i).__name__)
    return out


def chat(h: FrameHandler[str], member: str) -> list[Intent]:
    chat_frame = '{"type":"chat","payload":{"roomId":"r","message":"x"}}'
    return h.handle(member, CLIENTS[member], chat_frame)


def joined(h: FrameHandler[str], member: str) -> None:
    h.handle(member, CLIENTS[member], '{"type":"join","payload":{"roomId":"r"}}')
    room = h.registry.room_by_id("r")
    assert room is not None
    token = h.registry.probe_due(room, now=0.0, retry=0.1)
    if token is not None:
        h.registry.probe_returned(room.topic, token)


def test_handler_rate_limits_chats_then_closes_the_flooder() -> None:
    clock = Clock()
    h = make(clock, (20, 40), (10, 20))
    joined(h, "flooder")
    joined(h, "calm")
    results = [chat(h, "flooder") for _ in range(40)]
    assert all(isinstance(r[0], Publish) for r in results)
    assert codes(chat(h, "flooder")) == ["rate_limited"]
    assert isinstance(chat(h, "calm")[0], Publish)  # a neighbour is unaffected
    closed: list[Intent] = []
    for _ in range(int(PATIENCE * 100) + 10):
        clock.advance(0.01)
        out = chat(h, "flooder")
        if out == [ABUSE_CLOSE]:
            closed = out
            break
    assert closed == [Close(1008, "rate limit exceeded", "rate_limited")]


def test_handler_rate_limits_joins_and_leaves_separately() -> None:
    clock = Clock()
    h = make(clock, (20, 40), (10, 3))
    join = '{"type":"join","payload":{"roomId":"r%d"}}'
    results = [codes(h.handle("flooder", CLIENTS["flooder"], join % i)) for i in range(4)]
    assert results[:3] == [["Subscribe", "Await"]] * 3
    assert results[3] == ["rate_limited"]
    leave = '{"type":"leave","payload":{"roomId":"r0"}}'
    assert codes(h.handle("flooder", CLIENTS["flooder"], leave)) == ["rate_limited"]
    clock.advance(0.1)
    assert codes(h.handle("flooder", CLIENTS["flooder"], leave)) == ["ok", "Unsubscribe"]
    # Chats have their own bucket.
    assert codes(h.handle("flooder", CLIENTS["flooder"], '{"type":"ping"}')) == ["ok"]
