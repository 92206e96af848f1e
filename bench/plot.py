"""The latency sweep as a PNG: percentiles against offered load, one colour per server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

STYLES = (("p99", "-", "o"), ("p50", "--", "."))
NOISY = 25.0  # percent of the machine busy with other work: such points are drawn hollow


def plot_sweeps(sweeps: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for n, sweep in enumerate(sweeps):
        colour = f"C{n}"
        for pct, line, marker in STYLES:
            xs, ys, noisy = [], [], []
            for point in sweep["points"]:
                value = point["latency_ms"][pct]
                if value is not None and not math.isnan(value):
                    xs.append(point["params"]["offered_per_s"])
                    ys.append(value)
                    noisy.append((point.get("other_cpu_pct") or 0.0) > NOISY)
            ax.plot(xs, ys, line, color=colour, label=f"{sweep['server']} {pct}",
                    linewidth=2 if pct == "p99" else 1)
            for x, y, hollow in zip(xs, ys, noisy, strict=True):
                ax.plot([x], [y], marker=marker, color=colour,
                        markerfacecolor="white" if hollow else colour)
    ax.set_xlabel("offered load (chat messages/s into rooms of 10)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(title + f"\n(hollow markers: other work used > {NOISY:.0f} % of the machine)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
