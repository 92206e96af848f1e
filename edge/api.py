"""The edge's plain-HTTP side: the chat page, the edge list, and publishing by API key.

`POST /api/rooms/{roomId}/messages` lets a backend that holds the API key post
into a room without a WebSocket; the message goes through the broker like any
other chat, so members on every edge receive it. Its errors have the shape of
protocol error frames, so one parser serves both.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from chatconfig import HttpApi, Listener
from edge.node import Edge
from protocol.chats import check_chat, check_room_id
from protocol.codec import describe_invalid, encode
from protocol.errors import ErrorCode
from protocol.messages import Error, ErrorBody

STATIC_DIR = Path(__file__).parent / "static"
INDEX_PAGE = STATIC_DIR / "index.html"
API_SENDER = "api"  # `from` of messages posted through the HTTP API

# The page needs nothing from elsewhere: injected markup could neither run
# script nor load anything, even if rendering ever went wrong.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class PostedMessage(msgspec.Struct):
    message: str


_posted_decoder = msgspec.json.Decoder(PostedMessage)


def add_routes(
    app: web.Application,
    settings: HttpApi,
    listen: Listener,
    max_message_chars: int,
    edge: web.AppKey[Edge],
) -> None:
    api = Api(settings, listen, max_message_chars, edge)
    app.router.add_get("/api/edges", api.edges)
    # `.+` so that a room id with a `/` in it (sent as %2F) is still addressable.
    app.router.add_post("/api/rooms/{room_id:.+}/messages", api.post_message)
    app.router.add_static("/static/", STATIC_DIR)


async def page(request: web.Request) -> web.StreamResponse:
    """The chat page (GET / without a WebSocket upgrade)."""
    return web.FileResponse(INDEX_PAGE, headers=PAGE_HEADERS)


def peer_urls(raw: str) -> list[str]:
    return [url.strip() for url in raw.split(",") if url.strip()]


def _address(url: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or {"ws": 80, "http": 80, "wss": 443, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname or "").lower(), port


def self_url(peers: list[str], own: str, listen_host: str, listen_port: int) -> str:
    """This edge's entry in `peers`, so that `self` is spelled like the list it is in.

    `own` comes from the request's Host header, which may name the edge
    differently (`localhost` for `127.0.0.1`): a page would then not find
    itself in the list and count this edge twice. Tried in turn: the URL the
    request used, the address this edge listens on, the only peer on this
    edge's port; when none fits (a proxy in front), `own`.
    """
    by_address = {_address(url): url for url in reversed(peers)}
    for address in (_address(own), (listen_host.lower(), listen_port)):
        if address in by_address:
            return by_address[address]
    on_port = [url for url in peers if (_address(url) or ("", None))[1] == listen_port]
    return on_port[0] if len(on_port) == 1 else own


def api_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=encode(Error(ErrorBody(code, message))),
        content_type="application/json",
    )


def bearer_matches(authorization: str | None, key: str) -> bool:
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time, so the key cannot be guessed byte by byte from timings.
    return hmac.compare_digest(value.strip().encode(), key.encode())


class Api:
    def __init__(
        self, settings: HttpApi, listen: Listener, max_message_chars: int, edge: web.AppKey[Edge]
    ) -> None:
        self.settings = settings
        self.listen = listen
        self.max_message_chars = max_message_chars
        self.peers = peer_urls(settings.peers)
        self.edge = edge

    async def edges(self, request: web.Request) -> web.Response:
        """Where a web client may (re)connect: every edge, or only this one."""
        scheme = "wss" if request.secure else "ws"
        own = f"{scheme}://{request.host}/"
        if not self.peers:
            return web.json_response({"edges": [own], "self": own})
        own = self_url(self.peers, own, self.listen.host, self.listen.port)
        return web.json_response({"edges": self.peers, "self": own})

    async def post_message(self, request: web.Request) -> web.Response:
        key = self.settings.api_key
        if not key:
            return api_error(404, "not_found", "the HTTP publish API is not enabled here")
        if not bearer_matches(request.headers.get("Authorization"), key):
            response = api_error(401, "unauthorized", "send `Authorization: Bearer <API key>`")
            response.headers["WWW-Authenticate"] = 'Bearer realm="roomcast"'
            return response
        room_id = request.match_info["room_id"]
        refused = check_room_id(room_id)
        if refused is not None:
            return api_error(400, refused.code, refused.text)
        try:
            posted = _posted_decoder.decode(await request.read())
        except msgspec.ValidationError as exc:
            return api_error(400, "invalid_payload", describe_invalid(exc))
        except msgspec.DecodeError:
            return api_error(400, "bad_json", 'body must be JSON: {"message": "..."}')
        edge = request.app[self.edge]
        refused = check_chat(
            room_id, posted.message, self.max_message_chars, edge.path.room_healthy(room_id),
            room_checked=True,
        )
        if refused is not None:
            status = 503 if refused.code is ErrorCode.UNAVAILABLE else 400
            return api_error(status, refused.code, refused.text)
        message_id = edge.publish_external(room_id, posted.message, API_SENDER)
        return web.json_response({"id": message_id, "roomId": room_id}, status=202)
