"""`GET /api/edges`: `self` is spelled exactly like this edge's entry in `edges`."""

from __future__ import annotations

from edge.api import self_url

PEERS = ["ws://127.0.0.1:8081/", "ws://127.0.0.1:8082/", "ws://127.0.0.1:8083/"]


def test_the_url_the_request_used_when_listed() -> None:
    assert self_url(PEERS, "ws://127.0.0.1:8082/", "127.0.0.1", 8082) == PEERS[1]


def test_another_name_for_this_edge_maps_to_its_entry() -> None:
    assert self_url(PEERS, "ws://localhost:8082/", "127.0.0.1", 8082) == PEERS[1]
    assert self_url(PEERS, "ws://[::1]:8083/", "127.0.0.1", 8083) == PEERS[2]


def test_listening_on_every_interface_still_finds_its_port() -> None:
    peers = ["ws://chat-a.example:8081/", "ws://chat-b.example:8082/"]
    assert self_url(peers, "ws://10.0.0.5:8082/", "0.0.0.0", 8082) == peers[1]


def test_same_port_on_several_hosts_goes_by_name() -> None:
    peers = ["ws://192.0.2.10:8081/", "ws://192.0.2.11:8081/"]
    assert self_url(peers, "ws://192.0.2.11:8081/", "0.0.0.0", 8081) == peers[1]
    # Neither name nor a unique port fits: keep what the request said.
    assert self_url(peers, "ws://edge-b:8081/", "0.0.0.0", 8081) == "ws://edge-b:8081/"


def test_behind_a_proxy_default_ports_and_case() -> None:
    peers = ["wss://Chat.Example/", "wss://chat2.example/"]
    assert self_url(peers, "wss://chat.example:443/", "127.0.0.1", 8081) == peers[0]
    assert self_url(peers, "wss://elsewhere/", "127.0.0.1", 8081) == "wss://elsewhere/"
