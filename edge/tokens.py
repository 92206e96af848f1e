"""`chat-token`: mint an HS256 token for a user, to try a secured edge by hand or in tests.

    chat-token --secret S --sub alice --rooms 'lobby,team-*' --ttl 3600

Settings are flags with CHAT_* fallbacks (chatconfig.TokenSettings). The
secret is the edges' own `--jwt-secret`, best given as CHAT_JWT_SECRET (flags
show up in the process list); `--secret` is the same flag. The token is
printed on stdout; connect with `ws://HOST:PORT/?token=...` or an
`Authorization: Bearer ...` header.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from chatconfig import TokenSettings, parse
from edge.auth import ALGORITHM


def mint(
    secret: str,
    sub: str,
    rooms: Sequence[str] | None = None,
    ttl: float = 3600.0,
    now: float | None = None,
    name: str | None = None,
) -> str:
    """A signed token for `sub`, valid for `ttl` seconds; `rooms` None allows any room.

    `name`: the display name members see on its chats and in presence (default: sub).
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + int(ttl)}
    if rooms is not None:
        claims["rooms"] = list(rooms)
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    settings = parse(TokenSettings, argv, environ, prog="chat-token")
    print(mint(settings.jwt_secret, settings.sub, settings.rooms, settings.ttl,
               name=settings.user_name or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
