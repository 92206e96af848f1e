"""Latency percentiles: an exact nearest-rank helper and a mergeable histogram.

Generator processes cannot ship every sample to the parent cheaply (a fan-out
run records hundreds of thousands), so each keeps a log-bucketed histogram
with 1 % relative precision; the parent merges them and reads percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)

_GROWTH = 1.01  # each bucket is 1 % wider than the one before it
_LOG_GROWTH = math.log(_GROWTH)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def bucket_of(micros: float) -> int:
    """Bucket 0 holds everything under 1 µs; bucket k >= 1 starts at 1.01**(k-1) µs."""
    if micros < 1.0:
        return 0
    return 1 + int(math.log(micros) / _LOG_GROWTH)


def bucket_value(index: int) -> float:
    """A representative value (µs) of a bucket: its geometric middle."""
    if index <= 0:
        return 0.5
    return float(_GROWTH ** (index - 1) * math.sqrt(_GROWTH))


class Histogram:
    """Counts of latencies in microseconds, with the exact minimum and maximum kept aside."""

    __slots__ = ("buckets", "count", "max_us", "min_us", "total_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total_us = 0.0
        self.min_us = math.inf
        self.max_us = 0.0

    def record(self, micros: float) -> None:
        index = 0 if micros < 1.0 else 1 + int(math.log(micros) / _LOG_GROWTH)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total_us += micros
        if micros > self.max_us:
            self.max_us = micros
        if micros < self.min_us:
            self.min_us = micros

    def merge(self, other: Histogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)
        self.min_us = min(self.min_us, other.min_us)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in µs, clamped to the exact extremes."""
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.count))
        if rank >= self.count:
            return self.max_us
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(max(bucket_value(index), self.min_us), self.max_us)
        return self.max_us

    def summary_ms(self) -> dict[str, float]:
        """The percentiles every report shows, in milliseconds (NaN when nothing was recorded)."""
        out = {name: self.percentile(q) / 1000.0 for name, q in PERCENTILES}
        out["max"] = self.max_us / 1000.0 if self.count else math.nan
        out["mean"] = self.total_us / self.count / 1000.0 if self.count else math.nan
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "buckets": [[k, v] for k, v in sorted(self.buckets.items())],
            "count": self.count,
            "total_us": self.total_us,
            "min_us": self.min_us if self.count else None,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Histogram:
        hist = cls()
        buckets = data["buckets"]
        assert isinstance(buckets, list)
        hist.buckets = {int(k): int(v) for k, v in buckets}
        hist.count = int(str(data["count"]))
        hist.total_us = float(str(data["total_us"]))
        hist.max_us = float(str(data["max_us"]))
        low = data.get("min_us")
        hist.min_us = math.inf if low is None else float(str(low))
        return hist


def merged(histograms: Iterable[Histogram]) -> Histogram:
    out = Histogram()
    for hist in histograms:
        out.merge(hist)
    return out
