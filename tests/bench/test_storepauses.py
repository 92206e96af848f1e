"""`python -m bench.storebench --pauses` end to end, at a tiny log limit."""

from __future__ import annotations

import re
import subprocess
import sys

from bench.servers import ROOT


def test_pauses_run_rewinds_the_log_and_reports_the_longest_commits() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.storebench", "--pauses", "--seconds", "1.5",
         "--wal-limit", str(256 * 1024)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = re.search(r"([\d,]+) commits of 50 chats in 1.5 s \(([\d,]+) chats/s\), log "
                        r"rewound (\d+) times by the store's thread", done.stdout)
    assert summary is not None, done.stdout
    commits, rewinds = int(summary[1].replace(",", "")), int(summary[3])
    assert commits > 100
    assert rewinds > 0  # 50 chats a commit pass 256 KiB of log within a few dozen commits
    longest = re.findall(r"^\s+([\d.]+)\s+(\d+)$", done.stdout, re.MULTILINE)
    assert len(longest) == 8
    times = [float(t) for t, _ in longest]
    assert times == sorted(times, reverse=True)
