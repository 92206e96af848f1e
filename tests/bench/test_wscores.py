"""`python -m bench.wscores` with tiny counts: every core must really do the work."""

from __future__ import annotations

import math

from bench.wscores import CANDIDATES, CHAT_BODY, Result, measure, table, verdict
from protocol.frames import text_frame


def test_every_core_parses_sends_and_costs_memory() -> None:
    results = measure(
        CANDIDATES, connections=200, members=10, rounds=2, fanouts=2, frames=50, rss_repeats=1
    )
    assert [r.name for r in results] == [c.name for c in CANDIDATES]
    frame = len(text_frame(CHAT_BODY))
    for r in results:
        assert r.joined == 200, r.name  # every connection parsed its join
        assert r.core_bytes > 16, r.name
        assert r.held_bytes > r.core_bytes, r.name  # the shell is counted on top
        assert r.frames_fed == 2 * 50
        assert r.messages_parsed == r.frames_fed, r.name
        assert r.deliveries == 2 * 2 * 2 * 10  # rounds x both ways x fan-outs x members
        assert r.bytes_written == r.deliveries * frame, r.name
        assert r.frame_ok, r.name  # byte for byte the frame the edge builds
        for which in ("each_ns", "shared_ns", "receive_ns"):
            value = r.median(which)
            assert math.isfinite(value) and value > 0, (r.name, which)


def test_table_and_verdict_name_every_core() -> None:
    results = [
        Result("own", "", 72, 250, 240, 200, [800.0], [260.0], [5000.0]),
        Result("lib", "", 1600, 1800, 1900, 200, [3000.0], [300.0], [9000.0]),
    ]
    text = table(results)
    assert "| own |" in text and "| lib |" in text
    [line] = verdict(results)
    assert line.startswith("lib:") and "over budget" in line
