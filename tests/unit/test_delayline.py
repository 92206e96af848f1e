"""The delay relay's line of held chunks (bench/delayline.py), with a clock passed by hand."""

from __future__ import annotations

import pytest

from bench.delayline import DelayLine, Release


def test_a_chunk_is_released_at_its_arrival_plus_the_delay_and_not_before() -> None:
    line = DelayLine(0.020)
    line.push(1.000, b"a")
    assert line.next_release == pytest.approx(1.020)
    assert line.due(1.0199) == Release(b"", False)
    assert line.due(1.020) == Release(b"a", False)
    assert line.next_release is None


def test_chunks_come_out_in_arrival_order_and_those_due_together_in_one_write() -> None:
    line = DelayLine(0.010)
    for i, at in enumerate((0.000, 0.001, 0.002, 0.050)):
        line.push(at, bytes([65 + i]))
    assert line.due(0.0115) == Release(b"AB", False)
    assert line.next_release == pytest.approx(0.012)
    assert line.due(1.0) == Release(b"CD", False)


def test_a_clock_that_steps_back_never_reorders() -> None:
    line = DelayLine(0.010)
    line.push(5.0, b"first")
    line.push(4.0, b"second")  # would be due earlier: held behind the first instead
    assert line.due(4.5) == Release(b"", False)
    assert line.due(5.010) == Release(b"firstsecond", False)


def test_the_end_comes_once_after_the_data_before_it() -> None:
    line = DelayLine(0.010)
    line.push(0.0, b"last words")
    line.finish(0.005)
    line.finish(0.006)  # a second end (EOF, then the connection lost) changes nothing
    assert line.due(0.010) == Release(b"last words", False)
    assert line.next_release == pytest.approx(0.015)
    assert line.due(0.015) == Release(b"", True)
    assert line.ended and line.next_release is None
    assert line.due(1.0) == Release(b"", False)
    with pytest.raises(ValueError):
        line.push(2.0, b"more")


def test_full_once_the_limit_is_held_and_not_after_a_release() -> None:
    line = DelayLine(0.010, limit=10)
    line.push(0.0, b"12345")
    assert not line.full
    line.push(0.001, b"67890")
    assert line.full and line.held == 10
    line.due(0.010)
    assert not line.full and line.held == 5


def test_no_delay_releases_at_once() -> None:
    line = DelayLine(0.0)
    line.push(3.0, b"x")
    assert line.due(3.0) == Release(b"x", False)


def test_empty_reads_hold_nothing() -> None:
    line = DelayLine(0.010)
    line.push(0.0, b"")
    assert line.next_release is None and line.held == 0


def test_dropped_when_the_destination_is_gone() -> None:
    line = DelayLine(0.010)
    line.push(0.0, b"never written")
    line.drop()
    assert (line.held, line.next_release, line.ended) == (0, None, True)
    line.push(0.1, b"late")  # still being read from a source that has not noticed
    line.finish(0.2)
    assert line.due(1.0) == Release(b"", False) and line.next_release is None


@pytest.mark.parametrize(("delay", "limit"), [(-0.001, 10), (0.01, 0)])
def test_refuses_a_negative_delay_or_no_room(delay: float, limit: int) -> None:
    with pytest.raises(ValueError):
        DelayLine(delay, limit)
