"""The README's Python example, extracted and run as a script against a real cluster."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.clients.conftest import OpenClient
from tests.support.procs import ROOT, Cluster, env_with

WAIT = 10.0
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
README_URL = re.compile(r"ws://127\.0\.0\.1:(808\d)/?")


def readme_script() -> str:
    [script] = PYTHON_BLOCK.findall((ROOT / "README.md").read_text())
    return script


def pointed_at(script: str, cluster: Cluster) -> str:
    """The script with the README's edges (8081, 8082...) swapped for the cluster's."""
    urls = cluster.urls()
    swapped = README_URL.sub(lambda m: urls[int(m[1]) - 8081], script)
    assert swapped != script, "the example names no edge URL"
    return swapped


Process = asyncio.subprocess.Process


@pytest.fixture
async def example_run(tmp_path: Path, client_cluster: Cluster) -> AsyncIterator[Process]:
    """The example saved as hello.py and started as the README says; killed after the test."""
    script = tmp_path / "hello.py"
    script.write_text(pointed_at(readme_script(), client_cluster))
    # As `.venv/bin/python hello.py` run from the repository root: the checkout imports.
    pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = env_with({"PYTHONPATH": os.pathsep.join(pythonpath)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def read_line(proc: Process, pattern: str) -> str:
    assert proc.stdout is not None
    seen: list[bytes] = []
    async with asyncio.timeout(WAIT):
        while line := await proc.stdout.readline():
            seen.append(line)
            if re.fullmatch(pattern, line.decode().rstrip("\n")):
                return line.decode()
    assert proc.stderr is not None
    err = await proc.stderr.read()
    raise AssertionError(f"no line matching {pattern!r}; stdout {seen}, stderr {err.decode()}")


def test_the_example_is_a_whole_script() -> None:
    script = readme_script()
    compile(script, "hello.py", "exec")  # no top-level `async with` or `await`
    assert "asyncio.run(" in script


async def test_readme_python_example_runs_against_a_cluster(
    example_run: Process, client_cluster: Cluster, open_client: OpenClient
) -> None:
    # Its own message comes back through the broker...
    await read_line(example_run, r"lobby \S+ hello")
    # ...and so does everyone else's, from another edge.
    other = await open_client(client_cluster.urls()[2])
    await other.join("lobby")
    await other.send("lobby", "hi from edge 3")
    await read_line(example_run, rf"lobby {re.escape(other.connection_id or '')} hi from edge 3")
    assert example_run.returncode is None  # it keeps listening until stopped
