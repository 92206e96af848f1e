"""broker.subscribers: XPUB's per-subscriber prefix filter and its first/last reports."""

from __future__ import annotations

from broker.subscribers import MEMO_LIMIT, Subscribers


def test_a_topic_goes_to_every_subscriber_with_a_matching_prefix_once() -> None:
    subs: Subscribers[str] = Subscribers()
    subs.subscribe("a", b"room:1")
    subs.subscribe("b", b"room:")
    subs.subscribe("b", b"room:1")  # matches twice, delivered once
    subs.subscribe("c", b"room:2")
    assert sorted(subs.matching(b"room:1")) == ["a", "b"]
    assert sorted(subs.matching(b"room:12")) == ["a", "b"]  # prefixes, as libzmq's
    assert sorted(subs.matching(b"room:2")) == ["b", "c"]
    assert subs.matching(b"roo") == ()
    assert subs.matching(b"other") == ()


def test_the_empty_prefix_is_everything() -> None:
    subs: Subscribers[str] = Subscribers()
    subs.subscribe("all", b"")
    assert subs.matching(b"anything") == ("all",)
    assert subs.matching(b"") == ("all",)


def test_first_subscriber_and_last_cancel_are_reported() -> None:
    subs: Subscribers[str] = Subscribers()
    assert subs.subscribe("a", b"t") is True
    assert subs.subscribe("a", b"t") is False  # a set per subscriber
    assert subs.subscribe("b", b"t") is False
    assert subs.cancel("a", b"t") is False  # b still has it
    assert subs.cancel("a", b"t") is False  # not a's any more
    assert subs.cancel("b", b"t") is True
    assert subs.matching(b"t") == ()
    assert len(subs) == 0
    assert subs.cancel("nobody", b"t") is False


def test_a_subscriber_gone_releases_what_only_it_had() -> None:
    subs: Subscribers[str] = Subscribers()
    subs.subscribe("a", b"x")
    subs.subscribe("a", b"y")
    subs.subscribe("b", b"y")
    assert subs.drop("a") == [b"x"]
    assert subs.matching(b"x") == ()
    assert subs.matching(b"y") == ("b",)
    assert subs.drop("a") == []
    assert sorted(subs.drop("b")) == [b"y"]
    assert len(subs) == 0


def test_what_is_remembered_follows_every_change() -> None:
    subs: Subscribers[str] = Subscribers()
    assert subs.matching(b"room:7") == ()  # remembered as nobody
    subs.subscribe("a", b"room:")
    assert subs.matching(b"room:7") == ("a",)
    subs.subscribe("b", b"room:7")
    assert sorted(subs.matching(b"room:7")) == ["a", "b"]
    subs.cancel("a", b"room:")
    assert subs.matching(b"room:7") == ("b",)
    subs.drop("b")
    assert subs.matching(b"room:7") == ()


def test_the_memo_is_bounded() -> None:
    subs: Subscribers[str] = Subscribers()
    subs.subscribe("a", b"t")
    for i in range(MEMO_LIMIT + 10):
        assert subs.matching(b"t%d" % i) == ("a",)
    assert len(subs._memo) <= MEMO_LIMIT
