from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatconfig import BrokerSettings, EdgeSettings, env_name, parse

README = Path(__file__).resolve().parents[2] / "README.md"


def test_flags_fall_back_to_environment_then_defaults() -> None:
    s = parse(EdgeSettings, [], {})
    assert (s.port, s.max_rooms) == (8081, 32)
    s = parse(EdgeSettings, [], {"CHAT_PORT": "9000", "CHAT_MAX_ROOMS": "5"})
    assert (s.port, s.max_rooms) == (9000, 5)
    s = parse(EdgeSettings, ["--port", "9100"], {"CHAT_PORT": "9000"})
    assert s.port == 9100


def test_bad_environment_value_is_reported() -> None:
    with pytest.raises(ValueError, match="CHAT_PORT"):
        parse(EdgeSettings, [], {"CHAT_PORT": "eighty"})


@pytest.mark.parametrize("cls", [EdgeSettings, BrokerSettings])
def test_every_setting_is_documented_in_the_readme(cls: type) -> None:
    text = README.read_text()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        assert f"`{flag}`" in text, flag
        assert f"`{env_name(f.name)}`" in text, env_name(f.name)
