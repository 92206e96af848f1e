"""Who a connection is: its user and display name (protocol v2 section 7). Pure.

With tokens, the token's `sub` and its `name` claim; in open mode, the
upgrade URL's `user` and `name` query parameters, which nobody verifies: any
client may claim any user there, so open mode suits demos and trusted
networks only. Both are 1 to 64 characters without control characters.
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 64


def label_error(what: str, value: str) -> str | None:
    """Why `value` cannot be a user or a name; None when it can."""
    if not 1 <= len(value) <= MAX_LENGTH:
        return f"`{what}` must be 1 to {MAX_LENGTH} characters, got {len(value)}"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return f"`{what}` must not contain control characters"
    return None
