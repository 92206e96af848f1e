"""Every console script in pyproject.toml names a function that exists."""

from __future__ import annotations

import importlib
import tomllib

import pytest

from tests.support.procs import ROOT

SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "scripts"
]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_resolves(name: str) -> None:
    module, _, attr = SCRIPTS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), attr)), SCRIPTS[name]


def test_chat_keys_lives_with_the_shared_config() -> None:
    # The broker and the edges both import CURVE handling; neither owns it.
    assert SCRIPTS["chat-keys"] == "chatconfig.curve:main"
