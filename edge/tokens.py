"""`chat-token`: mint an HS256 token for a user, to try a secured edge by hand or in tests.

    chat-token --secret S --sub alice --rooms 'lobby,team-*' --ttl 3600

The secret may also come from CHAT_JWT_SECRET (preferred: flags show up in
the process list). The token is printed on stdout; connect with
`ws://HOST:PORT/?token=...` or an `Authorization: Bearer ...` header.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from edge.auth import ALGORITHM

SECRET_ENV = "CHAT_JWT_SECRET"


def mint(
    secret: str,
    sub: str,
    rooms: Sequence[str] | None = None,
    ttl: float = 3600.0,
    now: float | None = None,
) -> str:
    """A signed token for `sub`, valid for `ttl` seconds; `rooms` None allows any room."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + int(ttl)}
    if rooms is not None:
        claims["rooms"] = list(rooms)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def split_rooms(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [r.strip() for r in raw.split(",") if r.strip()]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="chat-token", description="Mint a signed (HS256) token for a roomcast user."
    )
    parser.add_argument(
        "--secret", default=environ.get(SECRET_ENV), help=f"signing secret [env {SECRET_ENV}]"
    )
    parser.add_argument("--sub", required=True, help="user id; appears as `from` on messages")
    parser.add_argument(
        "--rooms",
        help="comma-separated room ids or glob patterns the user may join, e.g. 'lobby,team-*' "
        "(default: any room; an empty string: none)",
    )
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error(f"no secret: pass --secret or set {SECRET_ENV}")
    print(mint(args.secret, args.sub, split_rooms(args.rooms), args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
