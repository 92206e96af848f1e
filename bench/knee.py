"""Where latency bends: the highest offered load a server still carries comfortably.

A sweep point has bent once its p99 is more than `factor` times the p99 at
the lightest load (and at least `floor_ms` above it, so that sub-millisecond
noise does not count), or once the server delivers less than `keep_up` of
what was offered. The knee is the last load before the first bend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Point:
    offered: float  # messages per second sent into the rooms
    p99_ms: float
    delivered_ratio: float  # deliveries received / deliveries expected


@dataclass(frozen=True, slots=True)
class Knee:
    knee: float | None  # None: bent at the lightest load already
    bent_at: float | None  # None: never bent within the sweep
    baseline_p99_ms: float


def find_knee(points: Sequence[Point], factor: float = 3.0, floor_ms: float = 2.0,
              keep_up: float = 0.99) -> Knee:
    if not points:
        raise ValueError("no sweep points")
    ordered = sorted(points, key=lambda p: p.offered)
    base = ordered[0].p99_ms
    limit = max(base * factor, base + floor_ms)
    knee: float | None = None
    for point in ordered:
        if math.isnan(point.p99_ms) or point.p99_ms > limit or point.delivered_ratio < keep_up:
            return Knee(knee, point.offered, base)
        knee = point.offered
    return Knee(knee, None, base)


def describe(k: Knee) -> str:
    if k.bent_at is None:
        return f"no knee up to {k.knee:,.0f} msgs/s (p99 stayed within bounds)"
    if k.knee is None:
        return f"bent already at the lightest load ({k.bent_at:,.0f} msgs/s)"
    return f"knee at ~{k.knee:,.0f} msgs/s (p99 bends by {k.bent_at:,.0f} msgs/s)"
