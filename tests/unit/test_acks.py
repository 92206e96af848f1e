"""Acks owed to senders of chats with a msgId, without sockets."""

from __future__ import annotations

import json

from edge.acks import PendingAcks
from protocol.stream import AckNote


def test_each_send_gets_its_own_note_and_a_repeat_is_a_duplicate() -> None:
    acks: PendingAcks[str] = PendingAcks(timeout=5.0)
    acks.add("a", "r", "m1", "m1", now=0.0)
    acks.add("a", "r", "m1", "m1", now=0.1)  # sent again before the first ack came
    [(who, first)] = acks.noted(AckNote("r", "m1", "E", 7, False))
    [(_, second)] = acks.noted(AckNote("r", "m1", "E", 7, True))
    assert who == "a"
    assert json.loads(first)["payload"] == {"roomId": "r", "msgId": "m1", "epoch": "E",
                                            "offset": 7}
    assert json.loads(second)["payload"]["duplicate"] is True
    assert acks.noted(AckNote("r", "m1", "E", 7, True)) == []  # nothing owed any more
    assert len(acks) == 0


def test_an_ack_that_does_not_come_is_an_unavailable_naming_the_msgid() -> None:
    acks: PendingAcks[str] = PendingAcks(timeout=5.0)
    acks.add("a", "r", "u\x00m2", "m2", now=0.0)
    assert acks.expire(now=4.9) == []
    [(who, frame)] = acks.expire(now=5.0)
    payload = json.loads(frame)["payload"]
    assert who == "a" and payload["code"] == "unavailable" and payload["msgId"] == "m2"
    assert acks.noted(AckNote("r", "u\x00m2", "E", 1, False)) == []  # too late: dropped
