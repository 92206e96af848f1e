"""Every command the README prints runs as printed after its two set-up commands.

Set-up command 1 installs into `.venv` and puts `.venv/bin` on the PATH of
supervisord alone, so a reader's next shell finds the project's programs only
as `.venv/bin/NAME`. The virtualenv the tests run in stands in for `.venv`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import ROOT

README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
# Installed into .venv by command 1 and found nowhere else.
VENV_ONLY = SCRIPTS | {"supervisord", "supervisorctl", "pip", "pytest", "ruff", "mypy"}
# Tools the README names as the reader's own: websocat (it says where to get
# it), scp (between two hosts of a deployment).
READERS_OWN = {"websocat", "scp"}
SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell|console)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
SEPARATORS = {"&&", "||", ";", "|", "&"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
REPO_PATH = re.compile(r"(?:examples|scripts|deploy|docs)/\S+")


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    venv_on_path: bool  # preceded by PATH=...:.venv/bin:... for this command only

    @property
    def program(self) -> str:
        return self.words[0]

    def __str__(self) -> str:
        return shlex.join(self.words)


def commands_in(script: str) -> list[Command]:
    """The simple commands of a shell snippet, its comments and continuations removed."""
    found: list[Command] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                found.extend(_command(current))
                current = []
            else:
                current.append(token)
    return found


def _command(tokens: list[str]) -> list[Command]:
    venv_on_path = False
    while tokens and ASSIGNMENT.match(tokens[0]):
        name, _, value = tokens[0].partition("=")
        venv_on_path |= name == "PATH" and ".venv/bin" in value
        tokens = tokens[1:]
    return [Command(tuple(tokens), venv_on_path)] if tokens else []


def problem(command: Command) -> str | None:
    """Why `command` would not run as printed after the set-up, or None."""
    program = command.program
    if program.startswith(".venv/bin/"):
        name = program.removeprefix(".venv/bin/")
        if name not in SCRIPTS and not os.access(VENV_BIN / name, os.X_OK):
            return f"{program}: nothing of that name is installed into .venv"
    elif "/" in program:
        if not os.access(ROOT / program, os.X_OK):
            return f"{program}: no such executable in the repository"
    elif command.venv_on_path:
        if not os.access(VENV_BIN / program, os.X_OK):
            return f"{program}: not installed into .venv"
    elif program in VENV_ONLY:
        return f"{program}: only in .venv/bin, not on a new shell's PATH; write .venv/bin/{program}"
    elif program not in READERS_OWN and not shutil.which(program, path=_system_path()):
        return f"{program}: not on PATH"
    for word in command.words[1:]:
        if REPO_PATH.fullmatch(word) and not (ROOT / word).exists():
            return f"{word}: no such file in the repository"
    return None


def _system_path() -> str:
    """PATH as a new shell has it: without the tests' virtualenv."""
    entries = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and Path(e).resolve() != VENV_BIN.resolve())


def readme_commands() -> list[Command]:
    text = README.read_text()
    found = [c for block in SHELL_BLOCK.findall(text) for c in commands_in(block)]
    # Inline code that runs one of the project's programs, e.g. `chat-edge --help`.
    for span in INLINE.findall(text):
        words = span.split()
        if len(words) > 1 and words[0].removeprefix(".venv/bin/") in SCRIPTS:
            found.extend(commands_in(span.split("|")[0]))
    return found


COMMANDS = readme_commands()


def test_the_readme_prints_commands() -> None:
    programs = {c.program for c in COMMANDS}
    assert {"python3", "scripts/test.sh", ".venv/bin/chat-client", "curl"} <= programs


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_readme_command_runs_as_printed(command: Command) -> None:
    assert problem(command) is None, problem(command)


@pytest.mark.parametrize(
    ("snippet", "complaint"),
    [
        ("chat-client ws://127.0.0.1:8081 --room lobby", "only in .venv/bin"),
        ("printf 'a\\n' | chat-publish --room r -", "only in .venv/bin"),
        ("X=1 supervisorctl -c deploy/supervisord.conf status", "only in .venv/bin"),
        (".venv/bin/no-such-program --help", "nothing of that name"),
        ("scripts/no-such.sh", "no such executable"),
        (".venv/bin/python examples/missing.py", "no such file"),
        ("surely-not-a-real-program-xyz", "not on PATH"),
    ],
)
def test_the_check_catches_what_a_new_shell_would_not_run(snippet: str, complaint: str) -> None:
    [command] = [c for c in commands_in(snippet) if c.program != "printf"]
    assert complaint in (problem(command) or "")


def test_the_check_accepts_the_set_up_commands() -> None:
    setup = commands_in(
        "# 1. install\n"
        'python3 -m venv .venv && .venv/bin/pip install -e . && PATH="$PWD/.venv/bin:$PATH" '
        "supervisord -c deploy/supervisord.conf\n"
    )
    assert [c.program for c in setup] == ["python3", ".venv/bin/pip", "supervisord"]
    assert all(problem(c) is None for c in setup)


def _shipped_shards() -> str:
    """The broker shards deploy/supervisord.conf runs by default, as a publisher lists them."""
    conf = (ROOT / "deploy" / "supervisord.conf").read_text()
    count = int(re.search(r"CHAT_BROKERS:-(\d+)", conf)[1])  # type: ignore[index]
    port = int(re.search(r"CHAT_BROKER_PORT:-(\d+)", conf)[1])  # type: ignore[index]
    return ",".join(f"tcp://127.0.0.1:{port + 2 * i}|tcp://127.0.0.1:{port + 2 * i + 1}"
                    for i in range(count))


def test_publishers_the_readme_prints_list_the_shards_command_1_runs() -> None:
    # A broker refuses a publisher that counts another number of shards, so a
    # publisher command without them fails against command 1's system.
    printed = [c for block in SHELL_BLOCK.findall(README.read_text()) for c in commands_in(block)]
    publishers = [c for c in printed if c.program == ".venv/bin/chat-publish"
                  or "examples/ticker.py" in c.words]
    assert len(publishers) >= 2
    for command in publishers:
        words = list(command.words)
        if "--broker-pub" in words:
            continue  # a broker of its own
        flag = next((w for w in ("--brokers", "--broker-shards") if w in words), None)
        assert flag is not None, f"{command}: no --brokers"
        assert words[words.index(flag) + 1] == _shipped_shards(), str(command)
