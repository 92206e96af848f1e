"""Cost of parsing one WebSocket upgrade head: `python -m bench.headparse`.

Compares the hand-written parser the edge used before (kept here as the
baseline), the edge's parser now (llhttp through httptools, plus the checks
and the `Request` it builds) and h11 doing the bare parse. Microseconds per
head, best of several timeit repeats; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from urllib.parse import urlsplit

import h11

from protocol.handshake import BadRequest, Request, parse_request_head

# What a current browser sends, without the final CRLFCRLF (the front door cuts it off).
HEAD = (
    b"GET /ws?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl HTTP/1.1\r\n"
    b"Host: chat.example.com\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    b" Chrome/131.0.0.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: https://chat.example.com\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-GB,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
)


def handwritten(head: bytes) -> Request:
    """The parser the edge had before llhttp, verbatim but for its name."""
    text = head.decode("latin-1")
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


def with_h11(head: bytes) -> object:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + b"\r\n\r\n")
    return conn.next_event()


PARSERS: dict[str, Callable[[bytes], object]] = {
    "hand-written (before)": handwritten,
    "httptools/llhttp (now)": parse_request_head,
    "h11 (bare parse)": with_h11,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20_000, help="parses per repeat")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    lines = HEAD.count(b"\r\n")
    print(f"upgrade head of {len(HEAD)} bytes, {lines} header lines")
    for name, parse in PARSERS.items():
        timer = timeit.Timer("parse(HEAD)", globals={"parse": parse, "HEAD": HEAD})
        best = min(timer.repeat(number=args.number, repeat=args.repeat))
        print(f"{name:34} {best / args.number * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
