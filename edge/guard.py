"""The edge's front door: token, origin and per-IP checks before any handler runs.

An aiohttp middleware, so the checks happen before a WebSocket upgrade is
answered (a refused client gets a plain HTTP status, never a 101). With a
secret set, every WebSocket upgrade and every route needs a token, except:
`/healthz` and `/metrics`; the chat page's shell (`GET /` without an
upgrade, `/static/...`, `/api/edges`), which holds no chat data and asks the
user for the token it then sends with its upgrade; and the HTTP publish API,
which checks its own key (`--api-key`). The decisions themselves are the
pure functions of `edge.auth` and `edge.ratelimit`; this module only reads
the request and turns a refusal into a response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from chatconfig import EdgeSettings
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

log = logging.getLogger("edge")

IDENTITY = web.RequestKey("identity", Identity)
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
PAGE_PATHS = frozenset({"/", "/api/edges"})
PAGE_PREFIX = "/static/"
# The publish API, POST /api/rooms/{room}/messages: `Authorization: Bearer <API key>`.
OWN_KEY_PREFIX, OWN_KEY_SUFFIX = "/api/rooms/", "/messages"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def identity_of(request: web.Request) -> Identity | None:
    """Who the request's token names; None when the edge runs without a secret."""
    return request.get(IDENTITY)


def needs_token(path: str, method: str, upgrade: bool) -> bool:
    if path in OPEN_PATHS:
        return False
    if upgrade:
        return True
    if method == "POST" and path.startswith(OWN_KEY_PREFIX) and path.endswith(OWN_KEY_SUFFIX):
        return False
    page = method in ("GET", "HEAD") and (path in PAGE_PATHS or path.startswith(PAGE_PREFIX))
    return not page


def _refuse(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


def middleware(settings: EdgeSettings) -> Middleware:
    secret = settings.jwt_secret
    origins = parse_origins(settings.allowed_origins)
    require_origin = settings.require_origin
    per_ip: ConcurrencyCap[str] = ConcurrencyCap(settings.max_conns_per_ip)
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        log.warning("--jwt-secret is shorter than %d bytes: easy to brute-force", MIN_SECRET_BYTES)
    if not secret:
        log.info("no --jwt-secret: clients connect without a token")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and not origin_allowed(request.headers.get("Origin"), origins, require_origin):
            return _refuse(403, "origin not allowed")
        if secret and needs_token(request.path, request.method, upgrade):
            token = bearer_token(request.headers.get("Authorization"), request.query.get("token"))
            try:
                request[IDENTITY] = verify(token, secret)
            except AuthError as exc:
                return _refuse(401, str(exc), **{"WWW-Authenticate": "Bearer"})
        if not upgrade:
            return await handler(request)
        ip = request.remote or ""
        if not per_ip.acquire(ip):
            return _refuse(429, "too many connections from this address")
        try:
            return await handler(request)
        finally:
            per_ip.release(ip)

    return guard
