"""Health of the broker path, from returning probes."""

from __future__ import annotations

from edge.probes import ProbeClock
from protocol.topics import parse_probe


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
