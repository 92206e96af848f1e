"""bench.hops: a real echo process per hop kind, a round trip timed through each."""

from __future__ import annotations

import pytest

from bench import hops


@pytest.mark.parametrize("kind", hops.KINDS)
def test_each_hop_kind_makes_round_trips(kind: str) -> None:
    got = hops.measure(kind, [], [], round_trips=40, gap=0.0)
    assert 0 < got["p50_us"] <= got["p99_us"] < 1e6
    assert got["cpu_us_per_round_trip"] > 0


def test_the_table_has_a_row_per_placement(capsys: pytest.CaptureFixture[str]) -> None:
    hops.main(["--round-trips", "20", "--gap-ms", "0", "--kinds", "zmq-ipc"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| zmq-ipc |")]
    assert [row.split(" | ")[1] for row in rows] == [name for name, _, _ in hops.placements()]


def test_an_unknown_kind_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        hops.main(["--kinds", "zmq-udp"])
    assert "unknown kinds ['zmq-udp']" in capsys.readouterr().err
