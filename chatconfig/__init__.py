"""Every setting of every command, defined once.

Each setting is a field of a frozen dataclass. It becomes a command-line flag
(`max_rooms` -> `--max-rooms`) whose default comes from the environment
variable `CHAT_` + the flag in upper case (`CHAT_MAX_ROOMS`), and otherwise from
the field's default. Only the `__main__` modules call `parse`; everything else
receives the resulting settings object.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

ENV_PREFIX = "CHAT_"
DEFAULT_BROKER_PUB = "tcp://127.0.0.1:5559"
DEFAULT_BROKER_SUB = "tcp://127.0.0.1:5560"


def setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    broker_pub: str = setting(
        DEFAULT_BROKER_PUB, "address the broker binds for publishers (its XSUB socket)"
    )
    broker_sub: str = setting(
        DEFAULT_BROKER_SUB, "address the broker binds for subscribers (its XPUB socket)"
    )
    hwm: int = setting(
        100_000, "ZeroMQ high-water mark, in messages, of each pipe (0 means unbounded)"
    )
    log_level: str = setting("INFO", "logging level")
    # Security (docs/security.md).
    curve_secret_key: str = setting(
        "", "the broker's CURVE key_secret file (from chat-keys); turns CURVE on for both sockets"
    )
    curve_allowed: str = setting(
        "", "directory of the public .key files of edges and publishers allowed to connect"
    )


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    host: str = setting("127.0.0.1", "interface the HTTP/WebSocket server listens on")
    port: int = setting(8081, "port the HTTP/WebSocket server listens on")
    broker_pub: str = setting(DEFAULT_BROKER_PUB, "broker address to publish to")
    broker_sub: str = setting(DEFAULT_BROKER_SUB, "broker address to subscribe from")
    hwm: int = setting(
        100_000, "ZeroMQ high-water mark, in messages, of each pipe (0 means unbounded)"
    )
    max_rooms: int = setting(32, "rooms one connection may be in at once")
    max_message_chars: int = setting(4096, "longest chat message, in characters")
    max_frame_bytes: int = setting(
        64 * 1024, "largest WebSocket frame accepted from a client (close 1009 beyond it)"
    )
    max_connections: int = setting(
        50_000, "open WebSocket connections per edge (upgrade refused with 503 beyond it)"
    )
    outbox_bytes: int = setting(
        1024 * 1024, "unsent bytes a connection may owe before it is dropped as slow (1013)"
    )
    heartbeat: float = setting(
        20.0, "seconds between server pings; a peer silent for two of them is closed"
    )
    probe_interval: float = setting(1.0, "seconds between broker round-trip health probes")
    probe_timeout: float = setting(
        3.0, "seconds without a probe round trip before /healthz reports 503"
    )
    handshake_timeout: float = setting(
        10.0, "seconds a new connection may take to send its HTTP request head"
    )
    shutdown_timeout: float = setting(
        5.0, "seconds a graceful shutdown may spend flushing and closing clients"
    )
    name: str = setting("", "name of this edge in logs and /healthz (default: host:port)")
    # Clients (docs/clients.md).
    api_key: str = field(
        default="", repr=False,
        metadata={"help": "key for POST /api/rooms/ROOM/messages as `Authorization: Bearer "
                          "KEY` (empty: that endpoint answers 404)"},
    )
    peers: str = setting(
        "", "comma-separated public ws:// URLs of every edge, offered to web clients for "
            "failover at GET /api/edges (empty: only this edge)"
    )
    # Security (docs/security.md).
    jwt_secret: str = field(
        default="", repr=False,
        metadata={"help": "HS256 secret; when set every connection needs a signed JWT"},
    )
    allowed_origins: str = setting(
        "", "comma-separated Origin values allowed to upgrade (empty: any); others get 403"
    )
    require_origin: bool = setting(False, "refuse upgrades without an Origin header (403)")
    rate_limit: float = setting(20.0, "chats per second per connection (0 turns limiting off)")
    rate_burst: int = setting(40, "chats a connection may send at once before the rate applies")
    join_rate_limit: float = setting(20.0, "joins and leaves per second per connection (0: off)")
    join_rate_burst: int = setting(
        64, "joins and leaves a connection may send at once (twice the default room cap)"
    )
    max_conns_per_ip: int = setting(
        1000, "concurrent WebSocket connections per client IP (0 means no cap); beyond it 429"
    )
    curve_secret_key: str = setting(
        "", "this edge's CURVE key_secret file (from chat-keys); needs --curve-broker-key"
    )
    curve_broker_key: str = setting("", "the broker's CURVE public .key file")
    log_level: str = setting("INFO", "logging level")


S = TypeVar("S")


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _cast(kind: type, raw: str, name: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


def parse(
    cls: type[S],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str | None = None,
) -> S:
    """Build `cls` from flags, falling back to `CHAT_*` variables, then defaults."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(cls.__doc__ or "").strip() or None,
        epilog=f"Every flag may also be set by an environment variable: {ENV_PREFIX}<FLAG>.",
    )
    types = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kinds = {"str": str, "int": int, "float": float, "bool": bool}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind = kinds[str(types[f.name])]
        env = env_name(f.name)
        default = f.default
        if env in environ:
            default = _cast(kind, environ[env], env)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} [env {env}; default {f.default!r}]"
        if kind is bool:
            parser.add_argument(
                flag, dest=f.name, default=default, help=help_text,
                action=argparse.BooleanOptionalAction,
            )
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=default, help=help_text)
    namespace = parser.parse_args(argv)
    return cls(**vars(namespace))
