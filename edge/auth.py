"""Who a client is and what it may do, decided without any I/O.

A token is an HS256 JWT: `sub` names the user (it becomes `from` on the
user's messages), `exp` ends the connection, and the optional `rooms` claim
lists the room ids or glob patterns the user may join. Without `rooms` the
token does not restrict rooms; with `rooms: []` it allows none.

Only HS256 is accepted: the algorithm is fixed here, never taken from the
token's header, so `alg: none` and public-key algorithms are refused.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import jwt

from protocol.identity import label_error

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
_PATTERN_CHARS = frozenset("*?[")

K = TypeVar("K", bound=Hashable)


class AuthError(Exception):
    """The token is missing, malformed, badly signed, expired or not ours."""


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    exp: float  # Unix seconds
    rooms: tuple[str, ...] | None = None  # None: any room
    name: str | None = None  # the `name` claim: the display name (default: sub)


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token of a request: the `token` query parameter or `Authorization: Bearer`."""
    if query_token:
        return query_token
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def verify(token: str | None, secret: str, now: float | None = None) -> Identity:
    """Check signature, algorithm and expiry; return who the token names."""
    if not token:
        raise AuthError("no token")
    try:
        # With an injected clock, exp is checked against it instead of the wall clock.
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"], "verify_exp": now is None},
        )
        if now is not None and float(claims["exp"]) <= now:
            raise AuthError("token expired")
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    except (TypeError, ValueError):
        raise AuthError("invalid token: malformed claims") from None
    return identity_of(claims)


def identity_of(claims: Mapping[str, Any]) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("invalid token: `sub` must be a non-empty string")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AuthError("invalid token: `exp` must be a number")
    name = claims.get("name")
    if name is not None:
        why = label_error("name", name) if isinstance(name, str) else "`name` must be a string"
        if why:
            raise AuthError(f"invalid token: {why}")
    rooms = claims.get("rooms")
    if rooms is None:
        return Identity(sub, float(exp), None, name)
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise AuthError("invalid token: `rooms` must be a list of strings")
    return Identity(sub, float(exp), tuple(rooms), name)


def may_join(identity: Identity | None, room_id: str) -> bool:
    """Room ids are case-sensitive, in patterns too (`Team-*` does not allow `team-a`)."""
    if identity is None or identity.rooms is None:
        return True
    for allowed in identity.rooms:
        if _PATTERN_CHARS.isdisjoint(allowed):
            if allowed == room_id:
                return True
        elif fnmatch.fnmatchcase(room_id, allowed):
            return True
    return False


def parse_origins(raw: str) -> frozenset[str]:
    """`--allowed-origins`: comma-separated, e.g. `https://chat.example,http://localhost:3000`."""
    return frozenset(normalize_origin(o) for o in raw.split(",") if o.strip())


def normalize_origin(origin: str) -> str:
    # Browsers send scheme://host[:port] in lower case; be lenient with configuration.
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str | None, allowed: Iterable[str], require: bool) -> bool:
    """An empty allowlist allows every origin; a missing Origin passes unless required."""
    if origin is None:
        return not require
    allowed = allowed if isinstance(allowed, frozenset) else frozenset(allowed)
    if not allowed:
        return True
    return normalize_origin(origin) in allowed


class Deadlines(Generic[K]):
    """When each key is due, in one heap: one sweep closes what expired, no timer per key.

    A key that goes away early is discarded in O(1); its stale heap entry is
    skipped when it surfaces, and the heap is rebuilt when stale entries
    outnumber live ones.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def set(self, key: K, deadline: float) -> None:
        self._due[key] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), key))

    def discard(self, key: K) -> None:
        if self._due.pop(key, None) is not None and len(self._heap) > 64 + 2 * len(self._due):
            self._heap = [e for e in self._heap if self._due.get(e[2]) == e[0]]
            heapq.heapify(self._heap)

    def pop_due(self, now: float) -> list[K]:
        """Every key whose deadline is at or before `now`, earliest first; they are removed."""
        out: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if self._due.get(key) == deadline:
                del self._due[key]
                out.append(key)
        return out
