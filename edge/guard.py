"""The edge's front door policy: token, origin and per-IP checks.

`Gate` decides, from header values alone, whether a WebSocket upgrade or an
HTTP request may proceed; the WebSocket front door (`edge.server`) and an
aiohttp middleware only read the request and turn a refusal into a response.
With a secret set, every WebSocket upgrade and every route needs a token,
except: `/healthz` and `/metrics`; the chat page's shell (`GET /` without an
upgrade, `/static/...`, `/api/edges`), which holds no chat data and asks the
user for the token it then sends with its upgrade; and the HTTP publish API,
which checks its own key (`--api-key`). The decisions themselves are the
pure functions of `edge.auth` and `edge.ratelimit`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from chatconfig import Security
from edge.auth import (
    MIN_SECRET_BYTES,
    AuthError,
    Identity,
    bearer_token,
    origin_allowed,
    parse_origins,
    verify,
)
from edge.ratelimit import ConcurrencyCap
from protocol.identity import label_error

log = logging.getLogger("edge")

IDENTITY = web.RequestKey("identity", Identity)
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
PAGE_PATHS = frozenset({"/", "/api/edges"})
PAGE_PREFIX = "/static/"
OWN_KEY_PREFIX = "/api/rooms/"  # the publish API: `Authorization: Bearer <API key>`

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Admitted:
    identity: Identity | None  # None when the edge runs without a secret
    # In open mode: the user and name the upgrade URL claims (unverified).
    user: str | None = None
    name: str | None = None


def needs_token(path: str, method: str) -> bool:
    if path in OPEN_PATHS or path.startswith(OWN_KEY_PREFIX):
        return False
    page = method in ("GET", "HEAD") and (path in PAGE_PATHS or path.startswith(PAGE_PREFIX))
    return not page


class Gate:
    def __init__(self, settings: Security) -> None:
        self.secret = settings.jwt_secret
        self.origins = parse_origins(settings.allowed_origins)
        self.require_origin = settings.require_origin
        self.per_ip: ConcurrencyCap[str] = ConcurrencyCap(settings.max_conns_per_ip)
        if self.secret and len(self.secret.encode()) < MIN_SECRET_BYTES:
            log.warning(
                "--jwt-secret is shorter than %d bytes: easy to brute-force", MIN_SECRET_BYTES
            )
        if not self.secret:
            log.info("no --jwt-secret: clients connect without a token")

    def _identity(self, authorization: str | None, token: str | None) -> Identity | Refusal:
        assert self.secret
        try:
            return verify(bearer_token(authorization, token), self.secret)
        except AuthError as exc:
            return Refusal(401, str(exc), {"WWW-Authenticate": "Bearer"})

    def upgrade(
        self, origin: str | None, authorization: str | None, token: str | None, ip: str,
        user: str | None = None, name: str | None = None,
    ) -> Admitted | Refusal:
        """May this WebSocket upgrade proceed? On Admitted, `release(ip)` when it ends.

        `user` and `name`: the upgrade URL's query parameters, used in open
        mode only (with tokens, the token says who the connection is).
        """
        if not origin_allowed(origin, self.origins, self.require_origin):
            return Refusal(403, "origin not allowed")
        identity: Identity | None = None
        if self.secret:
            checked = self._identity(authorization, token)
            if isinstance(checked, Refusal):
                return checked
            identity = checked
            user = name = None
        else:
            for what, value in (("user", user), ("name", name)):
                why = None if value is None else label_error(what, value)
                if why:
                    return Refusal(400, why)
        if not self.per_ip.acquire(ip):
            return Refusal(429, "too many connections from this address")
        return Admitted(identity, user, name)

    def release(self, ip: str) -> None:
        self.per_ip.release(ip)

    def http(
        self, path: str, method: str, authorization: str | None, token: str | None
    ) -> Identity | Refusal | None:
        """May this plain HTTP request proceed? The identity its token names, if any."""
        if not self.secret or not needs_token(path, method):
            return None
        return self._identity(authorization, token)


def identity_of(request: web.Request) -> Identity | None:
    """Who the request's token names; None when the edge runs without a secret."""
    return request.get(IDENTITY)


def middleware(gate: Gate) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        checked = gate.http(
            request.path, request.method,
            request.headers.get("Authorization"), request.query.get("token"),
        )
        if isinstance(checked, Refusal):
            refusal = web.Response(
                status=checked.status, text=checked.text + "\n", headers=checked.headers
            )
            refusal.force_close()
            return refusal
        if checked is not None:
            request[IDENTITY] = checked
        # One request per connection: a later request on a kept-alive
        # connection could be a WebSocket upgrade, and only a fresh connection
        # passes the front door that serves those.
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.force_close()
            raise
        response.force_close()
        return response

    return guard
