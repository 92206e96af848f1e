"""Who a connection is, at the wire (protocol v2 section 7): `user` and `name`."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.conftest import OpenWs
from tests.security.conftest import upgrade_status
from tests.support.procs import Cluster, running_cluster


@pytest.fixture(scope="module")
def open_cluster() -> Iterator[Cluster]:
    with running_cluster(edges=2) as cluster:
        yield cluster


async def test_open_mode_takes_user_and_name_from_the_url(
    open_cluster: Cluster, clients: OpenWs
) -> None:
    a, b = open_cluster.edges
    alice = await clients(f"{a.url}?user=alice&name={quote('Alice Ä.')}")
    bob = await clients(f"{b.url}?user=bob")  # no name: the user
    anon = await clients(a.url)  # neither: the connection id, as in protocol v1
    for c in (alice, bob, anon):
        await c.join("who")
    for c, text in ((alice, "hi"), (bob, "yo"), (anon, "...")):
        await c.chat(text, "who")
        for member in (alice, bob, anon):
            got = await member.recv_chat()
            assert got["message"] == text
    seen = {}
    for c, text in ((alice, "a2"), (bob, "b2"), (anon, "c2")):
        await c.chat(text, "who")
        got = await bob.recv_chat()
        seen[text] = (got["from"], got["name"])
    assert seen["a2"] == ("alice", "Alice Ä.")
    assert seen["b2"] == ("bob", "bob")
    anon_id = seen["c2"][0]
    assert seen["c2"] == (anon_id, anon_id) and anon_id.count(".") == 1  # a connection id


@pytest.mark.parametrize("query", [
    "user=",  # empty
    "user=" + "u" * 65,  # too long
    "name=" + "n" * 65,
    "user=a%0Ab",  # a control character
    "name=%07bell",
])
async def test_a_bad_user_or_name_is_refused_with_400(
    open_cluster: Cluster, query: str
) -> None:
    assert await upgrade_status(f"{open_cluster.edges[0].url}?{query}") == 400


async def test_sixty_four_characters_are_allowed(open_cluster: Cluster) -> None:
    url = open_cluster.edges[0].url
    assert await upgrade_status(f"{url}?user={'u' * 64}&name={quote('名' * 64)}") == 101
