from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from chatconfig import (
    COMMANDS,
    BrokerEndpoints,
    BrokerLink,
    BrokerSettings,
    ClientSettings,
    CurveClient,
    CurveServer,
    EdgeSettings,
    HttpApi,
    Limits,
    Listener,
    Liveness,
    PublisherSettings,
    PublishSettings,
    RateLimits,
    Security,
    SettingError,
    Settings,
    TokenSettings,
    env_name,
    fields_of,
    flag_name,
    parse,
)
from chatconfig.schema import parser_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _ticker_settings() -> type[Settings]:
    spec = importlib.util.spec_from_file_location("ticker_example", ROOT / "examples/ticker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    settings: type[Settings] = module.TickerSettings
    return settings


TickerSettings = _ticker_settings()
ALL_COMMANDS: dict[str, type[Settings]] = COMMANDS | {"examples/ticker.py": TickerSettings}


def test_flags_fall_back_to_environment_then_defaults() -> None:
    s = parse(EdgeSettings, [], {})
    assert (s.listen.port, s.limits.max_rooms) == (8081, 32)
    assert s.liveness.join_timeout == 5.0  # the protocol's "`unavailable` after 5 s"
    s = parse(EdgeSettings, [], {"CHAT_PORT": "9000", "CHAT_MAX_ROOMS": "5"})
    assert (s.listen.port, s.limits.max_rooms) == (9000, 5)
    s = parse(EdgeSettings, ["--port", "9100"], {"CHAT_PORT": "9000"})
    assert s.listen.port == 9100
    s = parse(EdgeSettings, ["--broker-pub", "ipc:///tmp/p"], {"CHAT_BROKER_SUB": "ipc:///tmp/s"})
    assert s.broker.endpoints == BrokerEndpoints("ipc:///tmp/p", "ipc:///tmp/s")
    assert parse(EdgeSettings, [], {"CHAT_REQUIRE_ORIGIN": "yes"}).security.require_origin


def test_a_flag_wins_over_a_bad_variable() -> None:
    assert parse(EdgeSettings, ["--port", "9100"], {"CHAT_PORT": "eighty"}).listen.port == 9100


@pytest.mark.parametrize(
    ("argv", "environ", "named"),
    [
        ([], {"CHAT_PORT": "eighty"}, "CHAT_PORT: expected int, got 'eighty'"),
        (["--port", "eighty"], {}, "argument --port: expected int, got 'eighty'"),
        ([], {"CHAT_REQUIRE_ORIGIN": "maybe"}, "CHAT_REQUIRE_ORIGIN: expected a boolean"),
        (["--heartbeat", "0"], {}, "--heartbeat (CHAT_HEARTBEAT) must be greater than 0"),
        ([], {"CHAT_PORT": "0"}, "--port (CHAT_PORT) must be from 1 to 65535, got 0"),
    ],
)
def test_bad_values_end_the_process_like_argparse(
    argv: list[str], environ: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(EdgeSettings, argv, environ, prog="chat-edge")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: chat-edge")
    assert f"chat-edge: error: {named}" in err


# One case per rule: (settings class, its fields, what the message must say).
BAD: list[tuple[type[Settings], dict[str, Any], str]] = [
    (Listener, {"port": 0}, "--port (CHAT_PORT) must be from 1 to 65535, got 0"),
    (Listener, {"port": 65536}, "--port (CHAT_PORT) must be from 1 to 65535"),
    (Listener, {"host": ""}, "--host (CHAT_HOST) must be non-empty"),
    (Listener, {"max_connections": 0},
     "--max-connections (CHAT_MAX_CONNECTIONS) must be at least 1"),
    (Listener, {"handshake_timeout": 0.0},
     "--handshake-timeout (CHAT_HANDSHAKE_TIMEOUT) must be greater than 0"),
    (Listener, {"shutdown_timeout": -1.0},
     "--shutdown-timeout (CHAT_SHUTDOWN_TIMEOUT) must be at least 0"),
    (Listener, {"subprotocols": ("chat v1",)},
     "--subprotocols (CHAT_SUBPROTOCOLS) must be tokens (RFC 9110"),
    (Listener, {"subprotocols": ("chat/1",)}, "--subprotocols (CHAT_SUBPROTOCOLS) must be tokens"),
    (Listener, {"subprotocols": ("a", "a")}, "each listed once"),
    (BrokerEndpoints, {"broker_pub": "127.0.0.1:5559"},
     "--broker-pub (CHAT_BROKER_PUB) must be a ZeroMQ endpoint"),
    (BrokerEndpoints, {"broker_sub": "tcp://127.0.0.1"},
     "--broker-sub (CHAT_BROKER_SUB) must be a ZeroMQ endpoint"),
    (BrokerEndpoints, {"broker_sub": "tcp://127.0.0.1:70000"}, "PORT 1 to 65535"),
    (BrokerEndpoints, {"broker_sub": "smoke://x"}, "--broker-sub (CHAT_BROKER_SUB)"),
    (BrokerEndpoints, {"hwm": -1}, "--hwm (CHAT_HWM) must be at least 0, got -1"),
    (BrokerEndpoints, {"broker_pub": "ipc:///x", "broker_sub": "ipc:///x"},
     "--broker-pub (CHAT_BROKER_PUB) and --broker-sub (CHAT_BROKER_SUB) must differ"),
    (BrokerEndpoints, {"broker_pub": "ipc:///" + "p" * 107},
     "--broker-pub (CHAT_BROKER_PUB) must be a ZeroMQ endpoint such as tcp://HOST:PORT "
     "(PORT 1 to 65535 or *), ipc://PATH (PATH at most 107 bytes)"),
    (CurveClient, {"curve_secret_key": "a.key_secret"},
     "--curve-secret-key (CHAT_CURVE_SECRET_KEY) needs --curve-broker-key (CHAT_CURVE_BROKER_KEY)"),
    (CurveClient, {"curve_broker_key": "b.key"},
     "--curve-broker-key (CHAT_CURVE_BROKER_KEY) needs --curve-secret-key"),
    (CurveServer, {"curve_secret_key": "b.key_secret"},
     "--curve-secret-key (CHAT_CURVE_SECRET_KEY) needs --curve-allowed (CHAT_CURVE_ALLOWED)"),
    (CurveServer, {"curve_allowed": "allowed/"},
     "--curve-allowed (CHAT_CURVE_ALLOWED) needs --curve-secret-key"),
    (Limits, {"max_rooms": 0}, "--max-rooms (CHAT_MAX_ROOMS) must be at least 1, got 0"),
    (Limits, {"max_message_chars": 0},
     "--max-message-chars (CHAT_MAX_MESSAGE_CHARS) must be at least 1"),
    (Limits, {"max_frame_bytes": 0}, "--max-frame-bytes (CHAT_MAX_FRAME_BYTES) must be at least 1"),
    (Limits, {"outbox_bytes": -5}, "--outbox-bytes (CHAT_OUTBOX_BYTES) must be at least 1"),
    (RateLimits, {"rate_limit": -1.0}, "--rate-limit (CHAT_RATE_LIMIT) must be at least 0"),
    (RateLimits, {"rate_burst": 0}, "--rate-burst (CHAT_RATE_BURST) must be at least 1"),
    (RateLimits, {"join_rate_limit": -0.5},
     "--join-rate-limit (CHAT_JOIN_RATE_LIMIT) must be at least 0"),
    (RateLimits, {"join_rate_burst": 0},
     "--join-rate-burst (CHAT_JOIN_RATE_BURST) must be at least 1"),
    (Liveness, {"heartbeat": 0.0}, "--heartbeat (CHAT_HEARTBEAT) must be greater than 0, got 0.0"),
    (Liveness, {"heartbeat": float("nan")}, "--heartbeat (CHAT_HEARTBEAT) must be greater than 0"),
    (Liveness, {"probe_interval": 0.0},
     "--probe-interval (CHAT_PROBE_INTERVAL) must be greater than 0"),
    (Liveness, {"probe_timeout": 0.5},
     "--probe-timeout (CHAT_PROBE_TIMEOUT) must be greater than --probe-interval "
     "(CHAT_PROBE_INTERVAL), got 0.5 and 1"),
    (Liveness, {"probe_timeout": 1.0}, "must be greater than --probe-interval"),
    (Security, {"max_conns_per_ip": -1},
     "--max-conns-per-ip (CHAT_MAX_CONNS_PER_IP) must be at least 0"),
    (HttpApi, {"peers": "ws://a:1/,http://b:2/"},
     "--peers (CHAT_PEERS) must be comma-separated ws:// or wss:// URLs"),
    (EdgeSettings, {"log_level": "LOUD"},
     "--log-level (CHAT_LOG_LEVEL) must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    (BrokerSettings, {"log_level": ""}, "--log-level (CHAT_LOG_LEVEL) must be one of"),
    (ClientSettings, {"connect_timeout": 0.0},
     "--connect-timeout (CHAT_CONNECT_TIMEOUT) must be greater than 0"),
    (ClientSettings, {"echo_timeout": -1.0},
     "--echo-timeout (CHAT_ECHO_TIMEOUT) must be at least 0"),
    (PublisherSettings, {"live_timeout": 0.0},
     "--live-timeout (CHAT_LIVE_TIMEOUT) must be greater than 0"),
    (PublisherSettings, {"max_message_chars": 0},
     "--max-message-chars (CHAT_MAX_MESSAGE_CHARS) must be at least 1"),
    (PublishSettings, {"text": "x"}, "--room (CHAT_ROOM) must be given"),
    (PublishSettings, {"text": "x", "room": ("r",), "sender": ""},
     "--sender (CHAT_SENDER) must be non-empty"),
    (TokenSettings, {"sub": "alice"}, "--jwt-secret (CHAT_JWT_SECRET) must be given"),
    (TokenSettings, {"jwt_secret": "s", "sub": ""}, "--sub (CHAT_SUB) must be given"),
    (TokenSettings, {"jwt_secret": "s", "sub": "a", "ttl": 0.0},
     "--ttl (CHAT_TTL) must be greater than 0"),
    (TickerSettings, {"rate": 0.0}, "--rate (CHAT_RATE) must be greater than 0"),
    (TickerSettings, {"count": -1}, "--count (CHAT_COUNT) must be at least 0"),
    (TickerSettings, {"start": 0.0}, "--start (CHAT_START) must be greater than 0"),
    (TickerSettings, {"room": ()}, "--room (CHAT_ROOM) must be non-empty"),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "values", "message"), BAD)
def test_each_rule_names_the_flag_its_variable_and_the_range(
    cls: type[Settings], values: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingError) as exc:
        cls(**values)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (Listener, {"port": 1, "shutdown_timeout": 0.0}),
        (Listener, {"port": 65535, "subprotocols": ("chat.v2", "Chat_v1", "x!#$%&'*+-.^_`|~9")}),
        (BrokerEndpoints, {"broker_pub": "tcp://*:5559", "broker_sub": "tcp://[::1]:5560"}),
        (BrokerEndpoints, {"broker_pub": "ipc:///run/p", "broker_sub": "inproc://s", "hwm": 0}),
        (BrokerEndpoints, {"broker_pub": "ipc:///" + "p" * 106, "broker_sub": "ipc://@s"}),
        (CurveClient, {"curve_secret_key": "e.key_secret", "curve_broker_key": "b.key"}),
        (CurveServer, {"curve_secret_key": "b.key_secret", "curve_allowed": "allowed/"}),
        (RateLimits, {"rate_limit": 0.0, "join_rate_limit": 0.0}),
        (Liveness, {"probe_interval": 0.1, "probe_timeout": 0.2}),
        (Security, {"max_conns_per_ip": 0}),
        (HttpApi, {"peers": "ws://a:1/, wss://b/"}),
        (EdgeSettings, {"log_level": "warning"}),
        (ClientSettings, {"echo_timeout": 0.0}),
        (TickerSettings, {"count": 0}),
    ],
)
def test_the_edges_of_each_range_are_allowed(cls: type[Settings], values: dict[str, Any]) -> None:
    cls(**values)


def test_every_default_is_valid() -> None:
    for cls in (EdgeSettings, BrokerSettings, ClientSettings, PublisherSettings, TickerSettings):
        cls()


def test_subprotocols_are_a_comma_separated_list() -> None:
    s = parse(EdgeSettings, ["--subprotocols", "chat.v2, chat.v1"], {})
    assert s.listen.subprotocols == ("chat.v2", "chat.v1")
    s = parse(EdgeSettings, [], {"CHAT_SUBPROTOCOLS": "chat.v1"})
    assert s.listen.subprotocols == ("chat.v1",)
    assert parse(EdgeSettings, [], {}).listen.subprotocols == ()


def test_the_broker_and_its_clients_read_one_link() -> None:
    env = {"CHAT_BROKER_PUB": "tcp://10.0.0.5:6000", "CHAT_BROKER_SUB": "tcp://10.0.0.5:6001"}
    broker = parse(BrokerSettings, [], env)
    edge = parse(EdgeSettings, [], env)
    publish = parse(PublishSettings, ["--room", "r", "x"], env)
    ticker = parse(TickerSettings, [], env)
    assert broker.endpoints == edge.broker.endpoints == publish.publisher.broker.endpoints
    assert ticker.publisher.broker == edge.broker == BrokerLink(broker.endpoints)


def test_chat_client_settings() -> None:
    s = parse(
        ClientSettings, ["ws://a/", "ws://b/", "--room", "x", "--room", "y,z", "--name", "al"],
        {"CHAT_TOKEN": "t"},
    )
    assert s.urls == ("ws://a/", "ws://b/") and s.room == ("x", "y,z")  # a flag per room
    assert (s.display_name, s.token, s.echo_timeout) == ("al", "t", 10.0)
    s = parse(ClientSettings, ["ws://a/"], {"CHAT_ROOM": "x, y", "CHAT_DISPLAY_NAME": "bo"})
    assert (s.room, s.display_name) == (("x", "y"), "bo")


def test_chat_publish_settings(capsys: pytest.CaptureFixture[str]) -> None:
    s = parse(PublishSettings, ["--room", "r", "--from", "bot", "--timeout", "0.3", "hi"], {})
    assert (s.text, s.room, s.sender, s.publisher.live_timeout) == ("hi", ("r",), "bot", 0.3)
    with pytest.raises(SystemExit) as exc:
        parse(PublishSettings, ["hi"], {}, prog="chat-publish")
    assert exc.value.code == 2
    assert "--room (CHAT_ROOM) must be given" in capsys.readouterr().err


def test_secrets_stay_out_of_reprs() -> None:
    s = parse(EdgeSettings, [], {"CHAT_JWT_SECRET": "hunter2-jwt", "CHAT_API_KEY": "hunter2-api"})
    assert s.security.jwt_secret == "hunter2-jwt"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in repr(parse(ClientSettings, ["ws://a/"], {"CHAT_TOKEN": "hunter2"}))


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_help_lists_every_flag(command: str) -> None:
    text = parser_for(ALL_COMMANDS[command], command).format_help()
    for f in fields_of(ALL_COMMANDS[command]):
        if not f.metadata["operand"]:
            assert flag_name(f.name) in text and env_name(f.name) in text


# Variables several commands read must mean the same thing to each: one definition.
MEANS_A_ROOM_OF_ITS_OWN = {"CHAT_ROOM"}  # each command's rooms: join, or publish to


def test_a_variable_shared_by_commands_has_one_definition() -> None:
    seen: dict[str, list[tuple[str, dataclasses.Field[Any]]]] = defaultdict(list)
    for command, cls in ALL_COMMANDS.items():
        for f in fields_of(cls):
            if not f.metadata["operand"]:
                seen[env_name(f.name)].append((command, f))
    shared = {env: uses for env, uses in seen.items() if len(uses) > 1}
    assert {"CHAT_BROKER_PUB", "CHAT_JWT_SECRET", "CHAT_MAX_MESSAGE_CHARS"} <= set(shared)
    for env, uses in shared.items():
        if env in MEANS_A_ROOM_OF_ITS_OWN:
            continue
        definitions = {
            (
                f.default, f.metadata["help"], f.metadata["secret"],
                tuple(check.text for check in f.metadata["checks"]),
            )
            for _, f in uses
        }
        assert len(definitions) == 1, (env, [command for command, _ in uses])


def _readme_sections() -> dict[str, str]:
    text = README.read_text()
    config = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, str] = {}
    for part in config.split("\n### ")[1:]:
        title, _, body = part.partition("\n")
        sections[title.strip()] = body
    return sections


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_every_setting_is_documented_in_the_readme(command: str) -> None:
    section = _readme_sections()[command]
    for f in fields_of(ALL_COMMANDS[command]):
        if f.metadata["operand"]:
            assert re.search(rf"`{f.metadata['operand']}\b", section), f.metadata["operand"]
            continue
        assert f"`{flag_name(f.name)}`" in section, flag_name(f.name)
        assert f"`{env_name(f.name)}`" in section, env_name(f.name)
        for alias in f.metadata["aliases"]:
            assert f"`{alias}`" in section, alias


def test_broker_shards_list_and_shard_spec() -> None:
    edge = parse(EdgeSettings, ["--brokers", "tcp://a:1|tcp://a:2,tcp://b:1|tcp://b:2"],
                 environ={})
    assert [tuple(s) for s in edge.broker.shards()] == [("tcp://a:1", "tcp://a:2"),
                                                        ("tcp://b:1", "tcp://b:2")]
    # Without the list: the one broker of --broker-pub/--broker-sub.
    one = parse(EdgeSettings, ["--broker-pub", "tcp://h:1", "--broker-sub", "tcp://h:2"],
                environ={})
    assert [tuple(s) for s in one.broker.shards()] == [("tcp://h:1", "tcp://h:2")]
    for bad in (("tcp://a:1",), ("tcp://a:1|tcp://a:1",), ("tcp://a:1|nope",)):
        with pytest.raises(SettingError, match="--broker-shards"):
            BrokerLink(broker_shards=bad)
    broker = parse(BrokerSettings, ["--shard", "1/2"], environ={})
    assert (broker.shard_index, broker.shard_count) == (1, 2)
    for spec in ("2/2", "1/0", "x", "-1/2"):
        with pytest.raises(SettingError, match="--shard"):
            BrokerSettings(shard=spec)
