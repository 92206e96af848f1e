"""Every setting of every command, defined and checked once.

Each command's settings are a frozen dataclass composed of slices, one per
component: the edge hands `BrokerLink` to its bus, `Security` to its gate,
`Listener` to its front door, and so on. A slice that several commands need
(the broker link, above all) is one class, so both ends of the link read the
same flags, variables and defaults. `chatconfig.schema` turns the classes into
flags with `CHAT_*` fallbacks and checks every value when an object is built.
Only the `__main__` modules and the command-line entry points call `parse`;
everything else receives the resulting settings object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from chatconfig.schema import (
    ENDPOINT,
    ENV_PREFIX,
    NOT_EMPTY,
    REQUIRED,
    TOKENS,
    WS_URLS,
    Check,
    SettingError,
    Settings,
    above,
    at_least,
    between,
    comma_list,
    env_name,
    fields_of,
    flag_name,
    is_endpoint,
    one_of,
    parse,
    setting,
)
from protocol.identity import label_error
from protocol.presence import EDGE_TIMEOUT, HEARTBEAT_EVERY

__all__ = [
    "COMMANDS",
    "DEFAULT_BROKER_PUB",
    "DEFAULT_BROKER_SUB",
    "DEFAULT_SENDER",
    "ENDPOINT",
    "ENV_PREFIX",
    "NOT_EMPTY",
    "REQUIRED",
    "TOKENS",
    "WS_URLS",
    "BrokerEndpoints",
    "BrokerLink",
    "BrokerSettings",
    "Check",
    "ClientSettings",
    "CurveClient",
    "CurveServer",
    "EdgeSettings",
    "History",
    "HttpApi",
    "Limits",
    "Listener",
    "Liveness",
    "PublishSettings",
    "PublisherSettings",
    "RateLimits",
    "Security",
    "SettingError",
    "Settings",
    "Shard",
    "TokenSettings",
    "above",
    "at_least",
    "between",
    "comma_list",
    "env_name",
    "fields_of",
    "flag_name",
    "one_of",
    "parse",
    "setting",
]

DEFAULT_BROKER_PUB = "tcp://127.0.0.1:5559"
DEFAULT_BROKER_SUB = "tcp://127.0.0.1:5560"
DEFAULT_SENDER = "server"  # `from` of what a publisher posts, unless told otherwise
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# Settings that more than one command reads, each defined here once.


def log_level_setting() -> Any:
    return setting("INFO", "logging level", one_of(*LOG_LEVELS))


def max_message_chars_setting() -> Any:
    return setting(4096, "longest chat message, in characters", at_least(1))


def jwt_secret_setting(aliases: tuple[str, ...] = ()) -> Any:
    return setting(
        "", "HS256 secret of client tokens: an edge with one requires a signed token on every "
            "connection; chat-token signs with it",
        secret=True, aliases=aliases,
    )


def curve_secret_key_setting() -> Any:
    return setting(
        "", "this process's own CURVE .key_secret file (from chat-keys); empty: CURVE off"
    )


# The broker link: what the broker and everyone who connects to it agree on.


class Shard(NamedTuple):
    """One broker shard, as an edge or a publisher connects to it."""

    pub: str  # its XSUB: publishers connect here
    sub: str  # its XPUB: subscribers connect here


def _is_shard(item: str) -> bool:
    pub, sep, sub = item.partition("|")
    return bool(sep) and is_endpoint(pub) and is_endpoint(sub)


SHARD_LIST = Check(
    "comma-separated PUB|SUB pairs of ZeroMQ endpoints, e.g. "
    "tcp://h1:5559|tcp://h1:5560,tcp://h2:5559|tcp://h2:5560",
    lambda v: all(_is_shard(item) for item in v),
)


def _is_shard_spec(value: str) -> bool:
    index, sep, count = value.partition("/")
    return (bool(sep) and index.isdigit() and count.isdigit() and int(count) >= 1
            and int(index) < int(count))


SHARD_SPEC = Check("I/N with 0 <= I < N, e.g. 0/1 or 1/2", _is_shard_spec)


@dataclass(frozen=True, slots=True)
class BrokerEndpoints(Settings):
    """Broker endpoints: the broker binds them; edges and publishers connect to them."""

    broker_pub: str = setting(
        DEFAULT_BROKER_PUB, "the broker's endpoint for publishers (its XSUB socket)", ENDPOINT
    )
    broker_sub: str = setting(
        DEFAULT_BROKER_SUB, "the broker's endpoint for subscribers (its XPUB socket)", ENDPOINT
    )
    hwm: int = setting(
        100_000, "ZeroMQ high-water mark, in messages, of each pipe (0 means unbounded)",
        at_least(0),
    )

    def check(self) -> None:
        if self.broker_pub == self.broker_sub:
            raise SettingError(
                f"{self.label('broker_pub')} and {self.label('broker_sub')} must differ, "
                f"both are {self.broker_pub!r}"
            )


@dataclass(frozen=True, slots=True)
class CurveClient(Settings):
    """CURVE for a connecting process (docs/security.md): both files, or neither."""

    curve_secret_key: str = curve_secret_key_setting()
    curve_broker_key: str = setting("", "the broker's CURVE public .key file")

    def check(self) -> None:
        _both_or_neither(self, "curve_secret_key", "curve_broker_key")


@dataclass(frozen=True, slots=True)
class CurveServer(Settings):
    """CURVE for the broker (docs/security.md): a key and an allowlist, or neither."""

    curve_secret_key: str = curve_secret_key_setting()
    curve_allowed: str = setting(
        "", "directory of the public .key files of edges and publishers allowed to connect"
    )

    def check(self) -> None:
        _both_or_neither(self, "curve_secret_key", "curve_allowed")


def _both_or_neither(s: Settings, one: str, other: str) -> None:
    if bool(getattr(s, one)) != bool(getattr(s, other)):
        given, missing = (one, other) if getattr(s, one) else (other, one)
        raise SettingError(f"{s.label(given)} needs {s.label(missing)} as well")


@dataclass(frozen=True, slots=True)
class BrokerLink(Settings):
    """How an edge or a publisher reaches the broker."""

    endpoints: BrokerEndpoints = field(default_factory=BrokerEndpoints)
    broker_shards: tuple[str, ...] = setting(
        (), "the broker shards, in shard order, each PUB|SUB (its --broker-pub and "
            "--broker-sub), comma-separated; rooms are spread over them (docs/scaling.md). "
            "Empty: the one broker at --broker-pub and --broker-sub",
        SHARD_LIST, aliases=("--brokers",),
    )
    curve: CurveClient = field(default_factory=CurveClient)

    def shards(self) -> tuple[Shard, ...]:
        """Every broker shard's endpoints, shard 0 first."""
        if not self.broker_shards:
            return (Shard(self.endpoints.broker_pub, self.endpoints.broker_sub),)
        return tuple(Shard(*item.split("|")) for item in self.broker_shards)

    def check(self) -> None:
        ends = [end for shard in self.shards() for end in shard]
        if len(set(ends)) != len(ends):
            raise SettingError(
                f"{self.label('broker_shards')}: every endpoint must be different, "
                f"got {','.join(self.broker_shards)!r}"
            )


@dataclass(frozen=True, slots=True)
class History(Settings):
    """What the broker keeps of each room's stream, for recovery and replay."""

    history_size: int = setting(1000, "chats kept per room", at_least(1))
    history_ttl: float = setting(600.0, "seconds a chat is kept", above(0))
    history_bytes: int = setting(
        256 * 1024 * 1024, "bytes of history kept for all rooms together, overheads included",
        at_least(1024),
    )
    dedupe_window: float = setting(
        120.0, "seconds a chat's msgId is remembered, so a resend is delivered once",
        at_least(120),
    )
    data_dir: str = setting(
        "", "directory of the broker's durable store of its rooms' streams (empty: memory only)",
    )


@dataclass(frozen=True, slots=True)
class PresenceRules(Settings):
    """Who is in each room (protocol v2 section 7), kept by the broker that owns the room."""

    presence_grace: float = setting(
        5.0, "seconds a user whose connection dropped abruptly stays listed, so that a "
             "reconnect within them is neither a leave nor a join", above(0),
    )
    presence_edge_timeout: float = setting(
        EDGE_TIMEOUT, "seconds without a presence heartbeat after which an edge is dead: its "
                      "connections count as dropped (three of the edges' --presence-heartbeat)",
        above(0),
    )
    presence_rebuild: float = setting(
        EDGE_TIMEOUT, "seconds after the broker starts in which the edges' heartbeats rebuild "
                      "presence without join events, and leaves wait for the end (at least one "
                      "of the edges' --presence-heartbeat)",
        above(0),
    )
    presence_events_max_members: int = setting(
        1000, "members above which a room's presence_join and presence_leave events stop "
              "(0: no limit); listing with `presence` still works", at_least(0),
    )
    presence_events_rules: tuple[str, ...] = setting(
        (), "PATTERN=N,...: the member limit for room ids matching a glob, first match "
            "(0: no limit), overriding --presence-events-max-members",
    )

    def events_rules(self) -> tuple[tuple[str, int], ...]:
        rules = []
        for rule in self.presence_events_rules:
            pattern, _, limit = rule.rpartition("=")
            rules.append((pattern, int(limit)))
        return tuple(rules)

    def check(self) -> None:
        for rule in self.presence_events_rules:
            pattern, _, limit = rule.rpartition("=")
            if not pattern or not limit.isdigit():
                raise SettingError(
                    f"{self.label('presence_events_rules')} must be PATTERN=N items, "
                    f"got {rule!r}"
                )


@dataclass(frozen=True, slots=True)
class BrokerSettings(Settings):
    """Sequence and forward chats between edges and publishers (the ZeroMQ broker)."""

    endpoints: BrokerEndpoints = field(default_factory=BrokerEndpoints)
    curve: CurveServer = field(default_factory=CurveServer)
    history: History = field(default_factory=History)
    presence: PresenceRules = field(default_factory=PresenceRules)
    shard: str = setting(
        "0/1", "this broker's shard I of N: it sequences only the rooms that hash to I "
               "(docs/scaling.md) and refuses edges that count another N", SHARD_SPEC,
    )
    metrics_port: int = setting(
        0, "port of the broker's Prometheus /metrics (0: none)", between(0, 65535)
    )
    metrics_host: str = setting(
        "127.0.0.1", "interface the broker's /metrics listens on", NOT_EMPTY
    )
    log_level: str = log_level_setting()

    @property
    def shard_index(self) -> int:
        return int(self.shard.partition("/")[0])

    @property
    def shard_count(self) -> int:
        return int(self.shard.partition("/")[2])


# The edge, one slice per component.


@dataclass(frozen=True, slots=True)
class Listener(Settings):
    """Listening socket and front door (edge.server)."""

    host: str = setting(
        "127.0.0.1", "interface the HTTP/WebSocket server listens on", NOT_EMPTY
    )
    port: int = setting(8081, "port the HTTP/WebSocket server listens on", between(1, 65535))
    max_connections: int = setting(
        50_000, "open WebSocket connections per edge (upgrade refused with 503 beyond it)",
        at_least(1),
    )
    handshake_timeout: float = setting(
        10.0, "seconds a new connection may take to send its HTTP request head", above(0)
    )
    shutdown_timeout: float = setting(
        5.0, "seconds a graceful shutdown may spend flushing and closing clients", at_least(0)
    )
    subprotocols: tuple[str, ...] = setting(
        (), "comma-separated WebSocket subprotocol names the edge may select "
            "(empty: it selects none)",
        TOKENS,
    )


@dataclass(frozen=True, slots=True)
class Limits(Settings):
    """Per-connection limits (edge.clients, edge.connection, edge.continuity)."""

    max_rooms: int = setting(32, "rooms one connection may be in at once", at_least(1))
    max_message_chars: int = max_message_chars_setting()
    max_frame_bytes: int = setting(
        64 * 1024, "largest WebSocket frame accepted from a client (close 1009 beyond it)",
        at_least(1),
    )
    outbox_bytes: int = setting(
        1024 * 1024, "unsent bytes a connection may owe before it is dropped as slow (1013)",
        at_least(1),
    )
    history_max: int = setting(
        100, "most chats a join's `history` replays (a larger K is clamped)", at_least(0)
    )
    recovery_max: int = setting(
        1000, "most chats a join's `since` recovers; more missed: `recovered: false`",
        at_least(0),
    )


@dataclass(frozen=True, slots=True)
class RateLimits(Settings):
    """Per-connection rate limits (edge.ratelimit)."""

    rate_limit: float = setting(
        20.0, "chats per second per connection (0 turns limiting off)", at_least(0)
    )
    rate_burst: int = setting(
        40, "chats a connection may send at once before the rate applies", at_least(1)
    )
    join_rate_limit: float = setting(
        20.0, "joins and leaves per second per connection (0: off)", at_least(0)
    )
    join_rate_burst: int = setting(
        64, "joins and leaves a connection may send at once (twice the default room cap)",
        at_least(1),
    )


@dataclass(frozen=True, slots=True)
class Liveness(Settings):
    """Heartbeats to clients and presence owners, probes through the broker (edge.probes)."""

    heartbeat: float = setting(
        20.0, "seconds between server pings; a peer silent for two of them is closed", above(0)
    )
    probe_interval: float = setting(
        1.0, "seconds between broker round-trip health probes", above(0)
    )
    probe_timeout: float = setting(
        3.0, "seconds without a probe round trip before /healthz reports 503", above(0)
    )
    join_timeout: float = setting(
        5.0, "seconds a join waits for its room to be proven live through the broker before "
             "it is refused with `unavailable`", above(0),
    )
    presence_heartbeat: float = setting(
        HEARTBEAT_EVERY, "seconds between the presence heartbeats (this edge's whole "
                         "membership) to each broker shard; a third of the brokers' "
                         "--presence-edge-timeout", above(0),
    )

    def check(self) -> None:
        # Probes go out once an interval: a shorter timeout would flap between them.
        if self.probe_timeout <= self.probe_interval:
            raise SettingError(
                f"{self.label('probe_timeout')} must be greater than "
                f"{self.label('probe_interval')}, got {self.probe_timeout:g} and "
                f"{self.probe_interval:g}"
            )


@dataclass(frozen=True, slots=True)
class Security(Settings):
    """Who may connect (edge.guard; docs/security.md)."""

    jwt_secret: str = jwt_secret_setting()
    allowed_origins: str = setting(
        "", "comma-separated Origin values allowed to upgrade (empty: any); others get 403"
    )
    require_origin: bool = setting(False, "refuse upgrades without an Origin header (403)")
    max_conns_per_ip: int = setting(
        1000, "concurrent WebSocket connections per client IP (0 means no cap); beyond it 429",
        at_least(0),
    )


@dataclass(frozen=True, slots=True)
class HttpApi(Settings):
    """The plain-HTTP API (edge.api; docs/clients.md)."""

    api_key: str = setting(
        "", "key for POST /api/rooms/ROOM/messages as `Authorization: Bearer KEY` "
            "(empty: that endpoint answers 404)",
        secret=True,
    )
    peers: str = setting(
        "", "comma-separated public ws:// URLs of every edge, offered to web clients for "
            "failover at GET /api/edges (empty: only this edge)",
        WS_URLS,
    )


@dataclass(frozen=True, slots=True)
class EdgeSettings(Settings):
    """Serve WebSocket chat clients and relay their rooms through the broker (an edge)."""

    name: str = setting("", "name of this edge in logs and /healthz (default: host:port)")
    log_level: str = log_level_setting()
    listen: Listener = field(default_factory=Listener)
    broker: BrokerLink = field(default_factory=BrokerLink)
    limits: Limits = field(default_factory=Limits)
    rates: RateLimits = field(default_factory=RateLimits)
    liveness: Liveness = field(default_factory=Liveness)
    security: Security = field(default_factory=Security)
    api: HttpApi = field(default_factory=HttpApi)


# Client-side commands.


@dataclass(frozen=True, slots=True)
class ClientSettings(Settings):
    """Chat in roomcast rooms from a terminal or a script (chat-client)."""

    urls: tuple[str, ...] = setting(
        (), "edge WebSocket URLs (ws://host:port/), tried in turn on failure", operand="URL"
    )
    room: tuple[str, ...] = setting((), "room to join at start (repeatable)", repeat=True)
    user: str = setting(
        "", "user id to connect as, sent to the edge (open mode; with a token, its `sub` "
            "instead; default: the connection id)",
    )
    display_name: str = setting(
        "", "display name, sent to the edge and shown on your messages and in presence "
            "(open mode; with a token, its `name` claim instead; default: the user id)",
        aliases=("--name",),
    )
    token: str = setting("", "access token, when the edges require one", secret=True)
    connect_timeout: float = setting(30.0, "seconds to reach a first edge", above(0))
    echo_timeout: float = setting(
        10.0, "seconds to wait at the end for your own messages to come back", at_least(0)
    )
    history: int = setting(
        0, "chats of each room's history to show on joining it (the edge caps it)", at_least(0)
    )

    def check(self) -> None:
        for name in ("user", "display_name"):
            value = getattr(self, name)
            if value and (why := label_error(self.label(name), value)):
                raise SettingError(why)


@dataclass(frozen=True, slots=True)
class PublisherSettings(Settings):
    """Publishing through the broker (chatclient.Publisher)."""

    broker: BrokerLink = field(default_factory=BrokerLink)
    max_message_chars: int = max_message_chars_setting()
    live_timeout: float = setting(
        10.0, "seconds to wait for the broker path to be live", above(0), aliases=("--timeout",)
    )


@dataclass(frozen=True, slots=True)
class PublishSettings(Settings):
    """Publish messages into chat rooms through the broker (chat-publish)."""

    text: str = setting("", "the message; `-` reads one message per line from stdin",
                        operand="TEXT")
    room: tuple[str, ...] = setting(
        (), "room to publish to (repeatable)", REQUIRED, repeat=True
    )
    sender: str = setting(
        DEFAULT_SENDER, "sender shown as `from`", NOT_EMPTY, aliases=("--from",)
    )
    publisher: PublisherSettings = field(default_factory=PublisherSettings)


@dataclass(frozen=True, slots=True)
class TokenSettings(Settings):
    """Mint a signed (HS256) token for a roomcast user (chat-token)."""

    jwt_secret: str = jwt_secret_setting(aliases=("--secret",))
    sub: str = setting("", "user id; appears as `from` on messages", REQUIRED)
    rooms: tuple[str, ...] | None = setting(
        None, "comma-separated room ids or glob patterns the user may join, e.g. "
              "'lobby,team-*' (default: any room; an empty string: none)",
    )
    ttl: float = setting(3600.0, "seconds until it expires", above(0))
    user_name: str = setting(
        "", "display name (the `name` claim), shown on messages and in presence "
            "(default: the user id)", aliases=("--name",),
    )

    def check(self) -> None:
        if self.user_name and (why := label_error("--user-name", self.user_name)):
            raise SettingError(why)
        if not self.jwt_secret:
            raise SettingError(
                f"{self.label('jwt_secret')} must be given (the edges' secret; prefer the "
                "variable: flags show up in the process list)"
            )


COMMANDS: dict[str, type[Settings]] = {
    "chat-edge": EdgeSettings,
    "chat-broker": BrokerSettings,
    "chat-client": ClientSettings,
    "chat-publish": PublishSettings,
    "chat-token": TokenSettings,
}
