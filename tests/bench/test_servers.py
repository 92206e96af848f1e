"""`ours@REF`: the name, and the temporary worktree it runs from."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from bench.__main__ import _servers
from bench.servers import ROOT, check_imports_from, parse_name, resolve_ref, worktree


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("ours", ("ours", None)),
        ("node", ("node", None)),
        ("ours@73f62eb", ("ours", "73f62eb")),
        ("ours:2", ("ours", None)),
        ("ours:4@HEAD", ("ours", "HEAD")),
        ("ours@HEAD~5", ("ours", "HEAD~5")),
        ("ours@v1.0^{commit}", ("ours", "v1.0^{commit}")),
        ("ours-memory", ("ours-memory", None)),
        ("ours-memory@HEAD~1", ("ours-memory", "HEAD~1")),
        ("ours-memory:2", ("ours-memory", None)),
        ("ours/1", ("ours", None)),
        ("ours:2/3@HEAD", ("ours", "HEAD")),
        ("ours-memory/2", ("ours-memory", None)),
        ("ours@origin/main", ("ours", "origin/main")),
    ],
)
def test_names_parse_into_design_and_ref(name: str, parsed: tuple[str, str | None]) -> None:
    assert parse_name(name) == parsed


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("theirs", "unknown server"),
        ("ours@", "name a git ref"),
        ("node:2", "only ours and ours-memory have shards"),
        ("ours:0", "have shards, ours:N with N from 1"),
        ("ours:x", "have shards, ours:N with N from 1"),
        ("node@HEAD", "only ours"),
        ("ours:memory", "have shards, ours:N with N from 1"),
        ("Ours@HEAD", "unknown server"),
        ("node/2", "only ours and ours-memory have edges"),
        ("ours/0", "have edges, ours/E with E from 1"),
        ("ours/", "have edges, ours/E with E from 1"),
        ("ours:2/x", "have edges, ours/E with E from 1"),
    ],
)
def test_bad_names_say_what_is_wrong(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_name(name)


def test_the_command_line_refuses_a_ref_that_names_no_commit() -> None:
    assert _servers("ours, ours@HEAD ,node") == ["ours", "ours@HEAD", "node"]
    with pytest.raises(argparse.ArgumentTypeError, match="names no commit"):
        _servers("ours,ours@no-such-ref-anywhere")


def _worktrees() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
                          capture_output=True, text=True, check=True).stdout


def test_worktree_is_checked_out_detached_and_removed() -> None:
    head = resolve_ref("HEAD")
    with worktree("HEAD") as tree:
        assert f"worktree {tree}" in _worktrees()
        assert (tree / "edge" / "__main__.py").is_file()
        assert (tree / "broker" / "__main__.py").is_file()
        checked_out = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"],
                                     capture_output=True, text=True, check=True).stdout.strip()
        assert checked_out == head
        check_imports_from(tree)  # python -m edge there imports the worktree's packages
    assert not tree.exists()
    assert not tree.parent.exists()
    assert str(tree) not in _worktrees()


def test_worktree_is_removed_when_the_run_fails() -> None:
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="edge died"), worktree("HEAD") as tree:
        seen.append(tree)
        raise RuntimeError("edge died")
    [tree] = seen
    assert not tree.parent.exists()
    assert str(tree) not in _worktrees()


def test_check_imports_notices_packages_from_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="came from elsewhere"):
        check_imports_from(tmp_path)  # nothing here: broker and edge come from the install


def test_shard_counts_in_names() -> None:
    from bench.servers import shard_count

    assert [shard_count(n) for n in ("ours", "ours:2", "ours:4@HEAD", "node")] == [1, 2, 4, 1]


def test_edges_are_one_per_server_core_unless_named() -> None:
    from bench.pinning import plan_cpus
    from bench.servers import edge_count

    pinned = plan_cpus([0, 1], wanted=True, have_taskset=True)  # servers get core 0
    shared = plan_cpus([0, 1], wanted=False, have_taskset=True)  # servers get both
    assert [edge_count(n, pinned) for n in ("ours", "ours@HEAD", "ours/3", "ours:2/2@HEAD")] \
        == [1, 1, 3, 2]
    assert [edge_count(n, shared) for n in ("ours", "ours:4", "ours/1")] == [2, 2, 1]
