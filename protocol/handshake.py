"""Server side of the RFC 6455 opening handshake, sans I/O.

The front door reads an HTTP request head; this module parses it, decides
whether it is an acceptable WebSocket upgrade and builds the response bytes.
Nothing here touches a socket.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path) or "/"

    def query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def is_websocket_upgrade(self) -> bool:
        upgrade = self.headers.get("upgrade", "").lower()
        connection = self.headers.get("connection", "").lower()
        tokens = {t.strip() for t in connection.split(",")}
        return self.method == "GET" and upgrade == "websocket" and "upgrade" in tokens


class BadRequest(Exception):
    pass


def parse_request_head(head: bytes) -> Request:
    """Parse an HTTP/1.1 request line and headers (without the final CRLFCRLF)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any bytes
        raise BadRequest("undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    try:
        urlsplit(parts[1])
    except ValueError:
        raise BadRequest("malformed request target") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(parts[0], parts[1], headers)


def http_response(status: int, reason: str, body: str = "", **headers: str) -> bytes:
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(data)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake_refusal(request: Request) -> bytes | None:
    """The HTTP error for a malformed upgrade, or None if it can be accepted."""
    if request.headers.get("sec-websocket-version") != "13":
        return http_response(
            426, "Upgrade Required", "WebSocket version 13 only\n", Sec_WebSocket_Version="13"
        )
    key = request.headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        return http_response(400, "Bad Request", "bad Sec-WebSocket-Key\n")
    return None


def handshake_accept(request: Request) -> bytes:
    """The 101 response; no extensions (compression off keeps frames shareable)."""
    key = request.headers["sec-websocket-key"]
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()
