"""Tokens -> identities, room permissions, origins, expiry deadlines; no sockets."""

from __future__ import annotations

import base64
import json
import stat
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest

from chatconfig import curve as keys
from edge.auth import (
    AuthError,
    Deadlines,
    Identity,
    bearer_token,
    may_join,
    origin_allowed,
    parse_origins,
    verify,
)
from edge.guard import needs_token
from edge.rooms import RoomRegistry
from edge.session import Await, Client, FrameHandler, Reply, Subscribe
from edge.tokens import main as chat_token
from edge.tokens import mint
from protocol.ids import Sequence
from protocol.topics import room_topic

SECRET = "unit-test-secret-0123456789abcdef"  # 32 bytes: no short-key warning
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        (b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature))
    )


def good_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(NOW) + 60, **extra}


def other_algorithm(alg: str) -> str:
    """Signed with the right secret but not with HS256."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the secret is short for HS384/HS512; irrelevant here
        return jwt.encode(good_claims(), SECRET, algorithm=alg)


# Verification.


def test_good_token_gives_identity() -> None:
    token = jwt.encode(good_claims(rooms=["lobby", "team-*"]), SECRET, algorithm="HS256")
    assert verify(token, SECRET, now=NOW) == Identity("alice", NOW + 60, ("lobby", "team-*"))


def test_token_without_rooms_allows_any_room() -> None:
    token = jwt.encode(good_claims(), SECRET, algorithm="HS256")
    ident = verify(token, SECRET, now=NOW)
    assert ident.rooms is None
    assert may_join(ident, "anything")


def test_wall_clock_is_the_default() -> None:
    assert verify(mint(SECRET, "bob", ttl=60), SECRET).sub == "bob"
    with pytest.raises(AuthError, match="expired"):
        verify(mint(SECRET, "bob", ttl=-10), SECRET)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "garbage",
        "a.b.c",
        "....",
        jwt.encode(good_claims(), "another-secret-0123456789abcdef0", algorithm="HS256"),
        other_algorithm("HS384"),
        other_algorithm("HS512"),
        unsigned({"alg": "none", "typ": "JWT"}, good_claims()),
        unsigned({"alg": "RS256", "typ": "JWT"}, good_claims(), b"x" * 256),
        unsigned({"alg": "HS256", "typ": "JWT"}, good_claims()),  # no signature
        jwt.encode({"exp": int(NOW) + 60}, SECRET, algorithm="HS256"),  # no sub
        jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),  # no exp
        jwt.encode(good_claims(sub=""), SECRET, algorithm="HS256"),
        jwt.encode(good_claims(rooms="lobby"), SECRET, algorithm="HS256"),
        jwt.encode(good_claims(rooms=["ok", 3]), SECRET, algorithm="HS256"),
        jwt.encode(good_claims(exp="soon"), SECRET, algorithm="HS256"),
    ],
)
def test_bad_tokens_are_refused(token: str | None) -> None:
    with pytest.raises(AuthError):
        verify(token, SECRET, now=NOW)


def test_expired_token_is_refused() -> None:
    token = jwt.encode(good_claims(), SECRET, algorithm="HS256")
    assert verify(token, SECRET, now=NOW + 59.9).sub == "alice"
    with pytest.raises(AuthError, match="expired"):
        verify(token, SECRET, now=NOW + 60)


def test_none_algorithm_with_a_real_signature_is_still_refused() -> None:
    good = jwt.encode(good_claims(), SECRET, algorithm="HS256")
    _, claims, sig = good.split(".")
    forged = b64(json.dumps({"alg": "none"}).encode()) + "." + claims + "." + sig
    with pytest.raises(AuthError):
        verify(forged, SECRET, now=NOW)


def test_bearer_token_sources() -> None:
    assert bearer_token(None, None) is None
    assert bearer_token("Bearer abc", None) == "abc"
    assert bearer_token("bearer   abc ", None) == "abc"
    assert bearer_token("Basic abc", None) is None
    assert bearer_token("Bearer ", None) is None
    assert bearer_token("Bearer header", "query") == "query"


# Room permission.


@pytest.mark.parametrize(
    ("rooms", "room", "allowed"),
    [
        (("lobby",), "lobby", True),
        (("lobby",), "Lobby", False),
        (("lobby",), "lobby2", False),
        (("team-*",), "team-a", True),
        (("team-*",), "team-", True),
        (("team-*",), "Team-a", False),
        (("team-*",), "teams", False),
        (("room-?",), "room-1", True),
        (("room-?",), "room-10", False),
        (("r[12]",), "r2", True),
        (("r[12]",), "r3", False),
        (("*",), "anything at all", True),
        ((), "lobby", False),
        (("lobby", "team-*"), "team-x", True),
    ],
)
def test_may_join(rooms: tuple[str, ...], room: str, allowed: bool) -> None:
    assert may_join(Identity("u", NOW, rooms), room) is allowed


def test_open_edge_allows_every_room() -> None:
    assert may_join(None, "whatever")


def test_forbidden_join_in_the_pure_handler() -> None:
    ident = Identity("alice", NOW, ("lobby", "team-*"))
    h: FrameHandler[str] = FrameHandler(RoomRegistry(32), Sequence("e", "-"), lambda: 1, 100)
    alice = Client("c1", ident, None)
    join = '{"type":"join","payload":{"roomId":"%s"}}'
    [refusal] = h.handle("a", alice, join % "secret")
    assert isinstance(refusal, Reply)
    assert json.loads(refusal.frame)["payload"]["code"] == "forbidden"
    assert not h.registry.is_member("a", "secret")
    assert h.handle("a", alice, join % "team-red") == [
        Subscribe(room_topic("team-red")), Await(room_topic("team-red"))
    ]
    [refusal] = h.handle("a", alice, join % "Team-red")
    assert isinstance(refusal, Reply) and refusal.error == "forbidden"


# Origins.


def test_origin_allowlist() -> None:
    allowed = parse_origins(" https://chat.example , http://localhost:3000/ ,")
    assert allowed == {"https://chat.example", "http://localhost:3000"}
    assert origin_allowed("https://chat.example", allowed, require=False)
    assert origin_allowed("HTTPS://Chat.Example/", allowed, require=False)
    assert not origin_allowed("https://evil.example", allowed, require=False)
    assert not origin_allowed("null", allowed, require=False)
    assert origin_allowed(None, allowed, require=False)
    assert not origin_allowed(None, allowed, require=True)


def test_empty_allowlist_allows_any_origin() -> None:
    assert origin_allowed("https://anything.example", frozenset(), require=False)
    assert not origin_allowed(None, frozenset(), require=True)


# Expiry deadlines.


def test_deadlines_pop_in_order_and_skip_discarded() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("a", 10)
    d.set("b", 5)
    d.set("c", 7)
    d.discard("c")
    assert d.pop_due(4) == []
    assert d.pop_due(10) == ["b", "a"]
    assert len(d) == 0


def test_deadlines_reset_and_compaction() -> None:
    d: Deadlines[int] = Deadlines()
    d.set(1, 5)
    d.set(1, 50)  # a later deadline replaces the earlier one
    assert d.pop_due(10) == []
    assert d.pop_due(50) == [1]
    for i in range(1000):
        d.set(i, 100 + i)
    for i in range(990):
        d.discard(i)
    assert len(d._heap) < 200  # stale entries do not pile up
    assert d.pop_due(10_000) == list(range(990, 1000))


# chat-token.


def test_mint_round_trip() -> None:
    issued = int(time.time())
    token = mint(SECRET, "carol", ["lobby", "team-*"], ttl=30, now=issued)
    assert verify(token, SECRET) == Identity("carol", issued + 30, ("lobby", "team-*"))
    assert verify(token, SECRET, now=issued + 29.9).sub == "carol"
    with pytest.raises(AuthError, match="expired"):
        verify(token, SECRET, now=issued + 30)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_chat_token_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert chat_token(["--sub", "dave", "--rooms", "a,b*"], {"CHAT_JWT_SECRET": SECRET}) == 0
    ident = verify(capsys.readouterr().out.strip(), SECRET)
    assert (ident.sub, ident.rooms) == ("dave", ("a", "b*"))
    # --secret is the same flag as the edges' --jwt-secret; CHAT_SUB and CHAT_ROOMS work too.
    assert chat_token(["--secret", SECRET], {"CHAT_SUB": "erin", "CHAT_ROOMS": ""}) == 0
    ident = verify(capsys.readouterr().out.strip(), SECRET)
    assert (ident.sub, ident.rooms) == ("erin", ())
    assert chat_token(["--sub", "f", "--jwt-secret", SECRET], {}) == 0
    assert verify(capsys.readouterr().out.strip(), SECRET).rooms is None  # any room
    with pytest.raises(SystemExit) as exc:
        chat_token(["--sub", "dave"], {})
    assert exc.value.code == 2
    assert "--jwt-secret (CHAT_JWT_SECRET)" in capsys.readouterr().err


# chat-keys.


def test_chat_keys_writes_loadable_keypairs(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    assert keys.main(["--dir", str(tmp_path), "--allow", str(allowed), "broker", "edge-a"]) == 0
    pair = keys.load_keypair(tmp_path / "edge-a.key_secret")
    assert keys.load_public_key(tmp_path / "edge-a.key") == pair.public
    assert len(pair.public) == len(pair.secret) == 40  # Z85
    assert stat.S_IMODE((tmp_path / "edge-a.key_secret").stat().st_mode) == 0o600
    assert sorted(p.name for p in allowed.iterdir()) == ["edge-a.key"]
    assert keys.allowed_keys(allowed) == 1
    assert keys.main(["--dir", str(tmp_path), "edge-a"]) == 1  # never overwrites silently
    with pytest.raises(keys.CurveKeyError, match="no secret"):
        keys.load_keypair(tmp_path / "edge-a.key")
    with pytest.raises(keys.CurveKeyError):
        keys.load_keypair(tmp_path / "missing.key_secret")
    with pytest.raises(keys.CurveKeyError):
        keys.client_keys(str(tmp_path / "edge-a.key_secret"), "")
    assert keys.client_keys("", "") is None


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:5559", True),
        ("tcp://localhost:5559", True),
        ("tcp://[::1]:5559", True),
        ("ipc:///tmp/broker", True),
        ("tcp://0.0.0.0:5559", False),
        ("tcp://*:5559", False),
        ("tcp://10.0.0.5:5559", False),
    ],
)
def test_is_local_endpoint(endpoint: str, local: bool) -> None:
    assert keys.is_local_endpoint(endpoint) is local


# Which requests need a token (edge.guard).


@pytest.mark.parametrize(
    ("path", "method", "needed"),
    [
        ("/healthz", "GET", False),
        ("/metrics", "GET", False),
        ("/ws", "GET", True),
        ("/", "GET", False),  # the chat page's shell
        ("/static/app.js", "GET", False),
        ("/api/edges", "GET", False),
        ("/", "POST", True),
        ("/api/rooms/r/messages", "POST", False),  # checks its own API key
        ("/api/rooms/r/messages", "GET", False),
        ("/api/rooms/r/history", "POST", False),
        ("/anything-else", "GET", True),
    ],
)
def test_needs_token(path: str, method: str, needed: bool) -> None:
    assert needs_token(path, method) is needed


def test_every_websocket_upgrade_needs_a_token_when_a_secret_is_set() -> None:
    from chatconfig import Security
    from edge.guard import Admitted, Gate, Refusal

    gate = Gate(Security(jwt_secret="s" * 32))
    refused = gate.upgrade(None, None, None, "1.2.3.4")
    assert isinstance(refused, Refusal) and refused.status == 401
    token = mint("s" * 32, "alice", None, 60)
    admitted = gate.upgrade(None, None, token, "1.2.3.4")
    assert isinstance(admitted, Admitted) and admitted.identity is not None
    assert admitted.identity.sub == "alice"
    assert isinstance(Gate(Security()).upgrade(None, None, None, "ip"), Admitted)
