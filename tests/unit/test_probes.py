from __future__ import annotations

from edge.probes import ProbeClock
from protocol.topics import parse_probe, room_topic


def test_each_subscription_has_its_own_probe_token() -> None:
    clock = ProbeClock("e1", interval=1.0, timeout=3.0, retry=0.1)
    topic = room_topic("r")
    first = clock.room_probe_due(topic, now=0.0)
    assert first is not None
    assert clock.room_probe_due(topic, now=0.05) is None  # not yet due again
    parsed = parse_probe(first)
    assert parsed is not None and clock.room_probe_matches(topic, parsed[1])
    clock.room_settled(topic)  # last member left; someone joins again
    second = clock.room_probe_due(topic, now=0.06)
    assert second is not None
    parsed_second = parse_probe(second)
    assert parsed_second is not None and parsed_second[1] != parsed[1]
    # The first subscription's probe, arriving late, proves nothing about the second.
    assert not clock.room_probe_matches(topic, parsed[1])
    assert clock.room_probe_matches(topic, parsed_second[1])


def test_health_follows_returning_probes() -> None:
    clock = ProbeClock("e1", interval=1.0, timeout=3.0, retry=0.1)
    assert not clock.healthy(0.0)
    body = clock.health_probe_due(0.0)
    assert body is not None
    parsed = parse_probe(body)
    assert parsed is not None
    assert clock.health_probe_returned(parsed[1], 0.002) is True  # recovered
    assert clock.healthy(1.0) and clock.last_rtt is not None
    assert not clock.healthy(3.5)
    clock.health_probe_returned(parsed[1], 3.6)
    clock.path_lost()
    assert not clock.healthy(3.7)
