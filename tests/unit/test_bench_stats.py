"""The pure pieces of chat-bench: percentiles, delivery accounting, framing, planning."""

from __future__ import annotations

import math
import random
from typing import Any, cast

import pytest

from bench.knee import Point, find_knee
from bench.ledger import Ledger, Member
from bench.payload import Stamp, encode_stamp, parse_stamp
from bench.pinning import plan_cpus
from bench.plan import Share, split_rooms
from bench.rawclient import FrameParser
from bench.report import efficiency, finite
from bench.stats import Histogram, merged, percentile
from bench.workloads import Workload
from protocol.websocket import OP_PING


class Bookkeeping(Workload):
    """Only the accounting every workload shares; no traffic."""

    async def setup(self) -> None:
        pass

    async def run(self) -> None:
        pass

# Percentiles.


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_histogram_tracks_exact_percentiles_within_one_percent() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(7, 1.5) for _ in range(20_000)]
    hist = Histogram()
    for s in samples:
        hist.record(s)
    ordered = sorted(samples)
    for q in (50, 90, 99, 99.9):
        assert hist.percentile(q) == pytest.approx(percentile(ordered, q), rel=0.01)
    assert hist.percentile(100) == max(samples)
    assert hist.count == len(samples)


def test_histogram_merge_and_json_round_trip() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for n, v in enumerate([0.2, 5, 50, 500, 5000, 50_000]):
        (a if n % 2 else b).record(v)
        both.record(v)
    restored = Histogram.from_json(cast(dict[str, object], finite(a.to_json())))
    combined = merged([restored, b])
    assert combined.buckets == both.buckets
    assert (combined.count, combined.min_us, combined.max_us) == (6, 0.2, 50_000)
    assert combined.summary_ms()["max"] == 50.0


def test_empty_histogram_reports_nan_and_json_null() -> None:
    summary = Histogram().summary_ms()
    assert all(math.isnan(v) for v in summary.values())
    assert finite(summary) == dict.fromkeys(summary)


# The message stamp.


def test_stamp_round_trip_and_padding() -> None:
    stamp = Stamp(3, 41, 1234, 987_654_321)
    text = encode_stamp(stamp, 128)
    assert len(text) == 128
    assert parse_stamp(text) == stamp


def test_stamp_longer_than_size_is_not_cut() -> None:
    text = encode_stamp(Stamp(1, 2, 3, 4_000_000_000), 4)
    assert parse_stamp(text) == Stamp(1, 2, 3, 4_000_000_000)


@pytest.mark.parametrize("text", ["", "hello", "1:2:3", "a:b:c:d:", "1:2:x:4:pad"])
def test_foreign_messages_have_no_stamp(text: str) -> None:
    assert parse_stamp(text) is None


# Delivery accounting.


def _msg(room: int, sender: int, seq: int, ts: int = 0) -> str:
    return encode_stamp(Stamp(room, sender, seq, ts), 32)


def test_in_order_deliveries_are_acknowledged() -> None:
    ledger, member = Ledger(), Member("r1", 1)
    for seq in (1, 2, 3):
        assert ledger.deliver(member, "r1", _msg(1, 9, seq), 1_000_000) is not None
    assert (ledger.received, ledger.order_violations, ledger.leaks) == (3, 0, 0)
    assert ledger.latency.count == 3


def test_late_and_duplicate_copies_are_order_violations() -> None:
    ledger, member = Ledger(), Member("r1", 1)
    assert ledger.deliver(member, "r1", _msg(1, 9, 3), 0) is not None  # 1 and 2 skipped
    assert ledger.deliver(member, "r1", _msg(1, 9, 1), 0) is not None  # late, still new
    assert ledger.deliver(member, "r1", _msg(1, 9, 1), 0) is None  # a second copy
    assert ledger.deliver(member, "r1", _msg(1, 9, 3), 0) is None  # a second copy
    assert ledger.deliver(member, "r1", _msg(1, 8, 1), 0) is not None  # another sender
    assert (ledger.received, ledger.order_violations, ledger.duplicates) == (5, 3, 2)
    assert member.gaps[9] == {2}


def test_messages_from_another_room_are_leaks() -> None:
    ledger, member = Ledger(), Member("r1", 1)
    assert ledger.deliver(member, "r10", _msg(10, 9, 1), 0) is None  # wrong room id
    assert ledger.deliver(member, "r1", _msg(10, 9, 1), 0) is None  # stamp of room 10
    assert ledger.deliver(member, "r1", "not a bench message", 0) is None
    assert (ledger.leaks, ledger.received) == (3, 0)


def test_messages_after_a_confirmed_leave_are_leaks() -> None:
    ledger, member = Ledger(), Member("r1", 1)
    assert ledger.deliver(member, "r1", _msg(1, 9, 1), 0) is not None
    member.left = True
    assert ledger.deliver(member, "r1", _msg(1, 9, 2), 0) is None
    assert (ledger.leaks, ledger.received) == (1, 1)


def test_warm_up_counts_deliveries_but_not_their_latency() -> None:
    ledger, member = Ledger(), Member("r1", 1)
    ledger.latency_from_ns = 100
    ledger.deliver(member, "r1", _msg(1, 1, 1, ts=50), 200)
    ledger.deliver(member, "r1", _msg(1, 1, 2, ts=150), 200)
    assert ledger.received == 2
    assert ledger.latency.count == 1


def test_loss_is_what_was_never_acknowledged() -> None:
    share = Share(mode="fanout", transport="ws", urls=("ws://x/",), prefix="r", rooms=(0,),
                  members=3, senders=1)
    work = Bookkeeping(share, cast(Any, None))
    for seq in (1, 2):
        work.expect(0, seq, 3)
    members = [Member("r0", 0) for _ in range(3)]
    handlers = [work.member_handler(m) for m in members]
    for handler in handlers:
        handler("r0", _msg(0, 0, 1))
    handlers[0]("r0", _msg(0, 0, 2))
    handlers[0]("r0", _msg(0, 0, 2))  # a duplicate must not stand in for a missing copy
    assert work.result()["missing"] == 2
    assert (work.result()["order_violations"], work.result()["duplicates"]) == (1, 1)
    assert (work.sent, work.expected, work.ledger.received) == (2, 6, 5)


# Planning.


def test_rooms_split_round_robin_without_empty_shares() -> None:
    assert split_rooms(5, 2) == [(0, 2, 4), (1, 3)]
    assert split_rooms(2, 8) == [(0,), (1,)]
    assert split_rooms(3, 0) == [(0, 1, 2)]


def test_members_spread_round_robin_over_servers() -> None:
    share = Share(mode="idle", transport="ws", urls=("a", "b", "c"), prefix="r", rooms=(0, 1),
                  members=2, senders=0)
    assert [share.url_of(r, m) for r in (0, 1) for m in (0, 1)] == ["a", "b", "c", "a"]
    assert Share.from_line(share.to_line()) == share


def test_cpu_plan_separates_servers_and_generator() -> None:
    two = plan_cpus([0, 1], wanted=True, have_taskset=True)
    assert (two.servers, two.loadgen, two.pinned) == ((0,), (1,), True)
    assert two.server_prefix() == ["taskset", "-c", "0"]
    eight = plan_cpus(range(8), wanted=True, have_taskset=True)
    assert (eight.servers, eight.loadgen) == ((0, 1, 2, 3), (4, 5, 6, 7))
    for plan in (plan_cpus([0], True, True), plan_cpus([0, 1], False, True),
                 plan_cpus([0, 1], True, False)):
        assert not plan.pinned and plan.server_prefix() == [] and plan.note


def test_knee_is_the_last_load_before_p99_bends() -> None:
    points = [Point(200, 2.0, 1.0), Point(400, 2.5, 1.0), Point(800, 9.0, 1.0),
              Point(1600, 80.0, 1.0)]
    knee = find_knee(points)
    assert (knee.knee, knee.bent_at) == (400, 800)
    assert find_knee(points[:2]).bent_at is None
    assert find_knee([Point(200, 1.0, 1.0), Point(400, 1.1, 0.5)]).bent_at == 400


def test_efficiency_ratios() -> None:
    runs = [{"workload": "fanout", "server": "ours", "deliveries_per_server_cpu_s": 300.0},
            {"workload": "fanout", "server": "node", "deliveries_per_server_cpu_s": 100.0}]
    assert efficiency(runs)["ratios"] == {"ours ÷ node": 3.0}


# The generator's WebSocket framing.


def test_frame_parser_handles_split_fragmented_and_control_frames() -> None:
    texts: list[bytes] = []
    controls: list[tuple[int, bytes]] = []
    parser = FrameParser(texts.append, lambda op, data: controls.append((op, data)))
    big = b"x" * 300
    stream = (
        bytes([0x81, 2]) + b"hi"
        + bytes([0x81, 126]) + len(big).to_bytes(2, "big") + big
        + bytes([0x89, 1]) + b"p"
        + bytes([0x01, 3]) + b"abc" + bytes([0x80, 3]) + b"def"
    )
    for i in range(0, len(stream), 7):  # arrives in awkward pieces
        parser.feed(stream[i:i + 7])
    assert texts == [b"hi", big, b"abcdef"]
    assert controls == [(OP_PING, b"p")]
