"""`chat-bench smoke` end to end: a real broker and three edges, a ~2 s fan-out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_has_no_loss_misorder_or_leaks(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "smoke", "--out", str(tmp_path / "out"), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=100,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert done.returncode == 0, done.stderr[-3000:]

    [report] = list((tmp_path / "out").glob("*-smoke.json"))
    assert report.with_suffix(".md").is_file()
    session = json.loads(report.read_text())
    [run] = session["runs"]
    assert run["server"] == "ours/3" and run["workload"] == "fanout"
    assert run["received"] > 0
    assert run["received"] == run["expected"]
    assert (run["loss"], run["order_violations"], run["leaks"]) == (0, 0, 0)
    names = {p["name"] for p in run["processes"]}
    assert {"broker", "edge-1", "edge-2", "edge-3", "loadgen-1"} <= names
    assert all(p["peak_rss_mib"] > 0 for p in run["processes"])
    # ours keeps its durable store, as shipped: read once the broker stopped, then removed.
    store = run["store"]
    assert store["chats"] > 0 and store["rows"] > 0 and store["disk_bytes"] > 0
    assert store["bytes_per_1000_chats"] == round(1000 * store["disk_bytes"] / store["chats"])
    text = report.with_suffix(".md").read_text()
    assert "| ours/3 |" in text and "ours/3's store at the end" in text
    assert list(temp.iterdir()) == []  # the store's temporary directory is gone
