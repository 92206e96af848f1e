"""What the numbers were measured on."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.servers import NODE_DIR


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().split("\n")[0] or None


def packages() -> dict[str, str | None]:
    """Versions of what the servers and the generator are built on."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("aiohttp", "uvloop", "pyzmq", "msgspec", "python-socketio", "redis"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import zmq

        out["libzmq"] = str(zmq.zmq_version())
    except ImportError:
        out["libzmq"] = None
    ws = NODE_DIR / "node_modules" / "ws" / "package.json"
    out["ws (npm)"] = json.loads(ws.read_text())["version"] if ws.is_file() else None
    return out


def revision() -> str | None:
    """The commit the servers were run from (uncommitted edits are not visible here)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    return _version(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])


def describe() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "node": _version(["node", "--version"]),
        "redis": _version(["redis-server", "--version"]),
        "packages": packages(),
    }
