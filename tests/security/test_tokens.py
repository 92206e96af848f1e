"""Tokens at the upgrade (401), `sub` as `from`, room permissions, and expiry (4001)."""

from __future__ import annotations

import base64
import json
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from edge.tokens import mint
from tests.security.conftest import SECRET, expiring_token, token, upgrade_status, with_token
from tests.support.procs import Cluster, http_get
from tests.support.wsclient import Closed, WsClient

Open = Callable[..., Any]


def room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none() -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 300}).encode())
    return f"{header}.{claims}."


def _hs512() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short key for HS512; the algorithm is the point
        claims = {"sub": "mallory", "exp": int(time.time()) + 300}
        return jwt.encode(claims, SECRET, algorithm="HS512")


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "bad_signature": lambda: mint("not-the-secret-0123456789abcdef-xx", "mallory"),
    "wrong_algorithm": _hs512,
    "alg_none": _alg_none,
    "expired": lambda: mint(SECRET, "mallory", ttl=-30),
    "garbage": lambda: "this-is-not-a-jwt",
    "empty": lambda: "",
}


async def test_missing_token_gets_401(secure_cluster: Cluster) -> None:
    for url in (secure_cluster.edges[0].url, secure_cluster.edges[0].url + "ws"):
        assert await upgrade_status(url) == 401


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize("where", ["query", "header"])
async def test_bad_tokens_get_401(secure_cluster: Cluster, kind: str, where: str) -> None:
    bad = BAD_TOKENS[kind]()
    url = secure_cluster.edges[0].url
    if where == "query":
        status = await upgrade_status(with_token(url, bad))
    else:
        status = await upgrade_status(url, headers={"Authorization": f"Bearer {bad}"})
    assert status == 401


async def test_good_token_in_query_or_header(secure_cluster: Cluster, clients: Open) -> None:
    url = secure_cluster.edges[0].url
    assert await upgrade_status(with_token(url, token("alice"))) == 101
    c = await clients(url, headers={"Authorization": f"Bearer {token('alice')}"})
    await c.send({"type": "ping"})
    await c.recv_type("pong")


async def test_sub_is_from_at_other_members(secure_cluster: Cluster, clients: Open) -> None:
    r = room()
    a_url, b_url = secure_cluster.edges[0].url, secure_cluster.edges[1].url
    alice = await clients(with_token(a_url, token("alice")))
    bob = await clients(with_token(b_url, token("bob")))
    assert (await alice.join(r))["payload"]["connectionId"] == "alice"
    await bob.join(r)
    await alice.chat("hi from alice", r)
    got = await bob.recv_chat()
    assert (got["from"], got["message"]) == ("alice", "hi from alice")
    assert (await alice.recv_chat())["from"] == "alice"
    assert got["name"] == "alice"  # no `name` claim: the sub


async def test_the_name_claim_is_the_display_name_and_the_url_cannot_override_it(
    secure_cluster: Cluster, clients: Open
) -> None:
    r = room()
    url = secure_cluster.edges[0].url
    tok = mint(SECRET, "carol", None, 300.0, name="Carol C.")
    carol = await clients(with_token(url, tok) + "&user=mallory&name=Mallory")
    await carol.join(r)
    await carol.chat("hi", r)
    got = await carol.recv_chat()
    assert (got["from"], got["name"]) == ("carol", "Carol C.")
    # A name claim that breaks the rules makes the token invalid.
    bad = mint(SECRET, "d", None, 300.0, name="x" * 65)
    assert await upgrade_status(with_token(url, bad)) == 401


async def test_health_and_metrics_need_no_token(secure_cluster: Cluster) -> None:
    edge = secure_cluster.edges[0]
    assert http_get(edge.http + "/healthz")[0] == 200
    assert http_get(edge.http + "/metrics")[0] == 200
    assert http_get(edge.http + "/ws")[0] == 401  # anything else does
    assert http_get(edge.http + "/nowhere")[0] == 401


async def test_forbidden_rooms_exact_and_glob(secure_cluster: Cluster, clients: Open) -> None:
    tag = uuid.uuid4().hex[:8]
    lobby, team = f"lobby-{tag}", f"team-{tag}-"
    c = await clients(with_token(secure_cluster.edges[0].url, token("carol", [lobby, team + "*"])))
    await c.join(lobby)
    await c.join(team + "red")
    for refused in (f"LOBBY-{tag}", f"lobby-{tag}x", f"Team-{tag}-red", f"secret-{tag}"):
        await c.send({"type": "join", "payload": {"roomId": refused}})
        await c.expect_error("forbidden")
    await c.send({"type": "chat", "payload": {"roomId": f"secret-{tag}", "message": "x"}})
    await c.expect_error("not_in_room")  # the refused join did not join


async def test_forbidden_room_never_receives_from_that_connection(
    secure_cluster: Cluster, clients: Open
) -> None:
    tag = uuid.uuid4().hex[:8]
    secret_room, open_room = f"secret-{tag}", f"open-{tag}"
    a_url, b_url = secure_cluster.edges[0].url, secure_cluster.edges[1].url
    member = await clients(with_token(b_url, token("dave")))  # any room
    await member.join(secret_room)
    await member.join(open_room)
    intruder = await clients(with_token(a_url, token("eve", [open_room])))
    await intruder.send({"type": "join", "payload": {"roomId": secret_room}})
    await intruder.expect_error("forbidden")
    await intruder.send({"type": "chat", "payload": {"roomId": secret_room, "message": "leak"}})
    await intruder.expect_error("not_in_room")
    await intruder.join(open_room)
    await intruder.chat("leak?")  # short form: the only room it is in
    await intruder.chat("marker", open_room)
    # Every chat travels the same broker path in order: a leak would come first.
    for expected in ("leak?", "marker"):
        got = await member.recv_chat()
        assert (got["roomId"], got["message"], got["from"]) == (open_room, expected, "eve")


async def test_expiry_closes_with_4001(secure_cluster: Cluster, clients: Open) -> None:
    tok, exp = expiring_token("frank", 2)
    c: WsClient = await clients(with_token(secure_cluster.edges[0].url, tok))
    await c.join(room())
    await c.send({"type": "ping"})
    await c.recv_type("pong")
    with pytest.raises(Closed) as closed:
        while True:
            await c.recv(timeout=15)
    assert time.time() >= exp - 0.05  # not before exp
    assert closed.value.code == 4001
    assert closed.value.reason == "token expired"
