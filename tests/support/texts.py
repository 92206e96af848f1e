"""Checks that an error text a client receives is written for people."""

from __future__ import annotations

# Pieces of regular expressions and of msgspec's internal notation.
MACHINE_MARKS = ("regex", "\\x", "\\Z", "[^", "^[", "]*", "$.", "Expected `")


def assert_for_people(text: str) -> None:
    assert text.strip(), "empty error text"
    marks = [mark for mark in MACHINE_MARKS if mark in text]
    assert not marks, f"error text shows {marks}: {text!r}"
