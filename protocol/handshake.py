"""Server side of the RFC 6455 opening handshake, sans I/O.

The front door reads an HTTP request head; this module parses it (with
llhttp, through httptools), decides whether it is an acceptable WebSocket
upgrade and builds the response bytes. Nothing here touches a socket.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 16 * 1024

# Host = uri-host [ ":" port ] (RFC 9110 section 7.2, RFC 3986 section 3.2.2):
# an IP literal in brackets or a reg-name (which also covers IPv4), no spaces,
# no controls, no userinfo or path.
_HOST = re.compile(
    r"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]|(?:[0-9A-Za-z\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
    r"(?::[0-9]*)?"
)

# RFC 6455 section 4.2.1 defines the handshake as an HTTP/1.1-or-later GET,
# and RFC 9110 section 7.8 says a server MUST ignore Upgrade in an HTTP/1.0
# request. So an HTTP/1.0 request with upgrade headers is not a handshake at
# all: it is served as the plain request it is, not refused with 400.
_UPGRADE_MIN_VERSION = (1, 1)
_VERSIONS = {"1.0": (1, 0), "1.1": (1, 1)}


def _list(value: str) -> list[str]:
    """An RFC 9110 section 5.6.1 list: comma separated, OWS trimmed, empty elements dropped."""
    return [item for item in (part.strip(" \t") for part in value.split(",")) if item]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    version: tuple[int, int] = (1, 1)
    fields: tuple[tuple[str, str], ...] = ()  # every field line, in order, lower-case names

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path) or "/"

    def query(self, name: str) -> str | None:
        # Blank values kept: `?user=` is an empty user (refused), not no user.
        values = parse_qs(urlsplit(self.target).query, keep_blank_values=True).get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def tokens(self, name: str) -> list[str]:
        """A token-list header (Upgrade, Connection), lower-cased: tokens are case-insensitive."""
        return _list(self.headers.get(name, "").lower())

    @property
    def is_websocket_upgrade(self) -> bool:
        return (
            self.method == "GET"
            and self.version >= _UPGRADE_MIN_VERSION
            and "websocket" in self.tokens("upgrade")
            and "upgrade" in self.tokens("connection")
        )


class BadRequest(Exception):
    pass


class _Head:
    """httptools callbacks: collect the target and the field lines."""

    __slots__ = ("complete", "fields", "target")

    def __init__(self) -> None:
        self.target = b""
        self.fields: list[tuple[str, str]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp strips leading OWS but keeps the trailing one.
        self.fields.append((name.decode("latin-1").lower(), value.decode("latin-1").rstrip(" \t")))

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_request_head(head: bytes) -> Request:
    """Parse an HTTP/1.x request line and headers (without the final CRLFCRLF)."""
    if b"\r\n\r\n" in head:  # llhttp would go on to parse a second request
        raise BadRequest("more than one request head")
    sink = _Head()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(head + b"\r\n\r\n")
    except httptools.HttpParserUpgrade:
        pass  # llhttp stops at any Upgrade; whether it is ours is decided later
    except httptools.HttpParserError as e:
        # This includes control characters (HTAB aside) in a field value. RFC
        # 9110 section 5.5 allows rejecting them or replacing them with SP; we
        # reject: no browser sends them, and a rewritten value would no longer
        # be the one the client meant (a token, an origin).
        raise BadRequest(str(e)) from None
    # llhttp also reads HTTP/0.9 and 2.0 request lines; only 1.x is served here.
    version = _VERSIONS.get(parser.get_http_version())
    if not sink.complete or version is None:
        raise BadRequest("not an HTTP/1.x request head")
    target = sink.target.decode("latin-1")
    try:
        urlsplit(target)
    except ValueError:
        raise BadRequest("malformed request target") from None
    headers: dict[str, str] = {}
    for key, value in sink.fields:
        # RFC 9110 section 5.3: repeated field lines are one comma-separated list.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    method = parser.get_method().decode("ascii")
    return Request(method, target, headers, version, tuple(sink.fields))


def http_response(status: int, reason: str, body: str = "", **headers: str) -> bytes:
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(data)}",
        # RFC 9110 section 7.8: whoever sends Upgrade also sends the upgrade option.
        "Connection: Upgrade, close" if "Upgrade" in headers else "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def _host_refusal(request: Request) -> str | None:
    hosts = [value for name, value in request.fields if name == "host"]
    # RFC 9112 section 3.2: no Host, several, or an invalid one is a 400.
    if len(hosts) != 1:
        return "exactly one Host header\n"
    if not _HOST.fullmatch(hosts[0]):
        return "bad Host header\n"
    return None


def handshake_refusal(request: Request) -> bytes | None:
    """The HTTP error for a malformed upgrade, or None if it can be accepted."""
    host = _host_refusal(request)
    if host is not None:
        return http_response(400, "Bad Request", host)
    if request.headers.get("sec-websocket-version") != "13":
        # RFC 9110 section 15.5.22: a 426 names the protocol to upgrade to.
        return http_response(
            426,
            "Upgrade Required",
            "WebSocket version 13 only\n",
            Upgrade="websocket",
            Sec_WebSocket_Version="13",
        )
    key = request.headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        return http_response(400, "Bad Request", "bad Sec-WebSocket-Key\n")
    return None


def select_subprotocol(request: Request, supported: Sequence[str]) -> str | None:
    """At most one of the client's offered subprotocols, in the server's order of preference.

    RFC 6455 section 4.2.2: the server selects one or none; none is no
    Sec-WebSocket-Protocol header at all, and the handshake still succeeds.
    Names are compared exactly: RFC 6455 folds no case for them.
    """
    offered = _list(request.headers.get("sec-websocket-protocol", ""))
    return next((name for name in supported if name in offered), None)


def handshake_accept(request: Request, subprotocols: Sequence[str] = ()) -> bytes:
    """The 101 response; no extensions (compression off keeps frames shareable)."""
    key = request.headers["sec-websocket-key"]
    chosen = select_subprotocol(request, subprotocols)
    protocol = f"Sec-WebSocket-Protocol: {chosen}\r\n" if chosen is not None else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        f"{protocol}\r\n"
    ).encode()
