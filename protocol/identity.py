"""Who a connection is: its `user` and display `name` (protocol v2 section 7). Pure.

Each connection has a user and a name, decided once, at its upgrade, and
never changed:

- with tokens: the token's `sub`, and its `name` claim (default: the sub);
- in open mode: the upgrade URL's query parameters `user` and `name`,
  unverified (anyone may claim any user); without `user` it is the
  connection id, without `name` it is the user.

Both are 1 to 64 characters (code points) with no control characters
(Unicode category Cc), whatever their source; an upgrade that breaks the
rule is refused (HTTP 400 in open mode), so no rule is checked per frame
and what a user costs the presence owner is bounded. A user id is compared
exactly, like a room id.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple
from urllib.parse import parse_qs

import msgspec

MAX_USER_CHARS = 64
MAX_NAME_CHARS = 64
# Unicode category Cc, as for room ids (protocol.messages.ROOM_ID_PATTERN).
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*\Z"
USER_RULE = (
    f"1 to {MAX_USER_CHARS} characters, "
    "with no control characters (U+0000 to U+001F, U+007F to U+009F)"
)
NAME_RULE = (
    f"1 to {MAX_NAME_CHARS} characters, "
    "with no control characters (U+0000 to U+001F, U+007F to U+009F)"
)

UserId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_USER_CHARS, pattern=_NO_CONTROL)
]
DisplayName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS, pattern=_NO_CONTROL)
]


class Identity(NamedTuple):
    user: str
    name: str


class IdentityRefusal(NamedTuple):
    """Why an upgrade's identity is refused: a sentence for people (an HTTP 400's body)."""

    text: str


def _fits(value: str, max_chars: int) -> bool:
    # Faster than the regular expression, and the same rule: this runs per
    # upgrade, and per entry the presence owner has not seen before.
    if not 1 <= len(value) <= max_chars:
        return False
    return not any(c < "\x20" or "\x7f" <= c <= "\x9f" for c in value)


def valid_user(value: object) -> bool:
    return isinstance(value, str) and _fits(value, MAX_USER_CHARS)


def valid_name(value: object) -> bool:
    return isinstance(value, str) and _fits(value, MAX_NAME_CHARS)


def resolve(
    connection_id: str, user: str | None, name: str | None
) -> Identity | IdentityRefusal:
    """The identity a connection gets from an optional user and name (either source)."""
    if user is not None and not valid_user(user):
        return IdentityRefusal(f"`user` must be {USER_RULE}")
    if name is not None and not valid_name(name):
        return IdentityRefusal(f"`name` must be {NAME_RULE}")
    user = connection_id if user is None else user
    return Identity(user, user if name is None else name)


def label_error(what: str, value: str) -> str | None:
    """Why `value` cannot be a user or a name (`what` names it); None when it can."""
    if _fits(value, MAX_USER_CHARS):
        return None
    return f"`{what}` must be {USER_RULE}"


def from_query(query: str, connection_id: str) -> Identity | IdentityRefusal:
    """Open mode: the identity named by an upgrade URL's query string (after `?`).

    `user=` or `name=` given empty, given twice, or breaking the rule is
    refused rather than ignored: a client that asked for a name should not be
    shown under its connection id without knowing why.
    """
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return IdentityRefusal("the query string is not valid")
    chosen: dict[str, str | None] = {"user": None, "name": None}
    for key in chosen:
        values = params.get(key)
        if values is None:
            continue
        if len(values) > 1:
            return IdentityRefusal(f"`{key}` is given more than once")
        chosen[key] = values[0]
    return resolve(connection_id, chosen["user"], chosen["name"])


def from_token(sub: str, name_claim: object) -> Identity | IdentityRefusal:
    """With tokens: the token's `sub` and its optional `name` claim (default: the sub)."""
    if name_claim is not None and not isinstance(name_claim, str):
        return IdentityRefusal("the token's `name` claim must be a string")
    if not valid_user(sub):
        return IdentityRefusal(f"the token's `sub` must be {USER_RULE}")
    return resolve(sub, sub, name_claim)
