"""The latency sweep as a PNG: percentiles against offered load, one colour per server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

STYLES = (("p99", "-", "o"), ("p50", "--", "."))


def plot_sweeps(sweeps: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for n, sweep in enumerate(sweeps):
        colour = f"C{n}"
        for pct, line, marker in STYLES:
            xs, ys = [], []
            for point in sweep["points"]:
                value = point["latency_ms"][pct]
                if value is not None and not math.isnan(value):
                    xs.append(point["params"]["offered_per_s"])
                    ys.append(value)
            ax.plot(xs, ys, line, marker=marker, color=colour,
                    label=f"{sweep['server']} {pct}", linewidth=2 if pct == "p99" else 1)
    ax.set_xlabel("offered load (chat messages/s into rooms of 10)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
