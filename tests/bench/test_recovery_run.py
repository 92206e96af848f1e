"""`chat-bench recovery` and `chat-bench broker` end to end, at smoke size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args, "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_recovery_cuts_both_ways_and_misses_and_duplicates_nothing(tmp_path: Path) -> None:
    done = _bench("recovery", "--rooms", "2", "--members", "2", "--duration", "1.5",
                  "--cuts", "2", "--gap", "0.1", out=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = list(tmp_path.glob("*-recovery.json"))
    result = json.loads(report.read_text())
    assert result["reconnects"] == 8
    assert (result["missed"], result["duplicated"], result["not_recovered"]) == (0, 0, 0)
    clients = result["clients"]
    assert sum(c["cuts_abrupt"] for c in clients) == 4
    assert sum(c["cuts_closed"] for c in clients) == 4
    assert all(c["received"] == c["expected"] > 0 for c in clients)
    assert result["recover_ms"]["count"] == 8
    assert "| client |" in done.stdout


def test_broker_load_forwards_every_chat_in_offset_order(tmp_path: Path) -> None:
    done = _bench("broker", "--batches", "1,10", "--duration", "0.5", "--warmup", "0.2",
                  "--rooms", "5", out=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = list(tmp_path.glob("*-broker.json"))
    session = json.loads(report.read_text())
    assert (session["params"]["warmup"], session["params"]["duration"]) == (0.2, 0.5)
    results = session["results"]
    assert [(r["store"], r["framing"], r["batch"]) for r in results] == [
        (store, framing, batch) for store in ("durable", "memory")
        for framing, batch in (("parts", 1), ("parts", 10), ("packed", 10))]
    for r in results:
        assert r["chats"] > 0 and r["broker_cpu_s"] > 0
        assert (r["lost"], r["offset_breaks"]) == (0, 0)
    # Each durable broker stored what it forwarded: every room's history, 1,000 chats each.
    for r in results:
        store = r["store_figures"]
        if r["store"] == "memory":
            assert store is None
        else:
            assert store["rooms"] == 5 and store["chats"] >= 5 * 1000
    assert "| durable | packed | 10 |" in done.stdout
