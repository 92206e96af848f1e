"""Identity and presence in the client's pure parts (protocol v2 section 7): the frames
it sends, how replies and events are matched, the roster, the upgrade URL, and how
chat-client shows them. No sockets."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chatclient import (
    ChatClient,
    Listing,
    Member,
    NotInRoom,
    PresenceJoin,
    PresenceLeave,
    Roster,
)
from chatclient.cli import Session, describe
from chatclient.core import Delivered, Done, Noted, Request, Tracker
from chatconfig import ClientSettings, parse
from protocol.codec import (
    PONG_FRAME,
    decode_server_frame,
    encode_chat,
    encode_error,
    encode_presence,
    encode_presence_join,
    encode_presence_leave,
)
from protocol.errors import ErrorCode
from protocol.messages import ServerFrame

PONG = decode_server_frame(PONG_FRAME)


def listing(room_id: str, *users: tuple[str, str, int], next_cursor: str | None = None) -> (
    ServerFrame
):
    return decode_server_frame(encode_presence(room_id, list(users), next_cursor))


def test_a_join_asks_for_presence_events_only_when_told() -> None:
    assert Request.join("r").frame == b'{"type":"join","payload":{"roomId":"r"}}'
    assert Request.join("r", 5, ("E", 3), presence=True).frame == (
        b'{"type":"join","payload":{"roomId":"r","history":5,'
        b'"since":{"epoch":"E","offset":3},"presence":true}}'
    )


def test_a_presence_request_and_the_page_after_a_cursor() -> None:
    tracker = Tracker()
    assert tracker.send(Request.presence("r")) == [
        b'{"type":"presence","payload":{"roomId":"r"}}', b'{"type":"ping"}'
    ]
    assert Request.presence("r", "c-1").frame == (
        b'{"type":"presence","payload":{"roomId":"r","cursor":"c-1"}}'
    )


def test_a_presence_request_completes_at_its_reply_after_the_pong() -> None:
    tracker = Tracker()
    request = Request.presence("r")
    tracker.send(request)
    assert tracker.receive(PONG) == []
    assert tracker.outstanding() == 1
    assert tracker.receive(listing("r", ("alice", "Alice", 2), ("bob", "bob", 1))) == [
        Done(request)
    ]
    assert request.listing is not None and request.listing.next is None
    assert [(u.user, u.name, u.connections) for u in request.listing.users] == [
        ("alice", "Alice", 2), ("bob", "bob", 1)
    ]
    assert tracker.outstanding() == 0


def test_a_presence_reply_before_its_pong_completes_at_the_pong() -> None:
    tracker = Tracker()
    request = Request.presence("r")
    tracker.send(request)
    assert tracker.receive(listing("r", ("a", "A", 1), next_cursor="a")) == []
    assert tracker.receive(PONG) == [Done(request)]
    assert request.listing is not None and request.listing.next == "a"


def test_replies_are_matched_by_room_then_in_order() -> None:
    tracker = Tracker()
    first, other, second = Request.presence("r"), Request.presence("s"), Request.presence("r")
    for request in (first, other, second):
        tracker.send(request)
    for _ in range(3):
        assert tracker.receive(PONG) == []
    assert tracker.receive(listing("s", ("s1", "S", 1))) == [Done(other)]
    assert tracker.receive(listing("r", ("r1", "R", 1))) == [Done(first)]
    assert tracker.receive(listing("r", ("r2", "R", 1))) == [Done(second)]
    assert second.listing is not None and second.listing.users[0].user == "r2"
    assert tracker.receive(listing("r")) == []  # nobody waits for it


def test_a_presence_request_from_a_non_member_fails_with_not_in_room() -> None:
    tracker = Tracker()
    request = Request.presence("r")
    tracker.send(request)
    assert tracker.receive(decode_server_frame(encode_error(ErrorCode.NOT_IN_ROOM, "no"))) == [
        Done(request)
    ]
    assert isinstance(request.error, NotInRoom)
    assert tracker.receive(PONG) == []
    assert tracker.outstanding() == 0


def test_an_abandoned_request_does_not_take_the_next_one_s_reply() -> None:
    tracker = Tracker()
    late = Request.presence("r")
    tracker.send(late)
    tracker.receive(PONG)
    tracker.abandon(late)  # its caller timed out
    fresh = Request.presence("r")
    tracker.send(fresh)
    tracker.receive(PONG)
    assert tracker.receive(listing("r", ("a", "A", 1))) == [Done(fresh)]
    assert late.listing is None


def test_lost_includes_presence_requests_awaiting_their_reply() -> None:
    tracker = Tracker()
    request = Request.presence("r")
    tracker.send(request)
    tracker.receive(PONG)
    assert tracker.lost() == [request]
    assert tracker.outstanding() == 0


def test_presence_events_pass_through_among_the_chats() -> None:
    tracker = Tracker()
    frames = [
        encode_presence_join("r", "alice", "Alice"),
        encode_chat("r", "hi", "e-1", "alice", 5, "m-1", "Alice"),
        encode_presence_leave("r", "alice"),
    ]
    events = [e for f in frames for e in tracker.receive(decode_server_frame(f))]
    assert events[0] == Noted(PresenceJoin("r", "alice", "Alice"))
    assert isinstance(events[1], Delivered) and events[1].message.name == "Alice"
    assert events[1].message.sender == "alice"
    assert events[2] == Noted(PresenceLeave("r", "alice"))


def test_the_roster_follows_a_listing_then_the_events() -> None:
    roster = Roster()
    roster.load("r", [Member("alice", "Alice", 2), Member("bob", "Bob", 1)])
    assert roster.apply(PresenceJoin("r", "carol", "Carol")) == Member("carol", "Carol", 1)
    assert roster.apply(PresenceLeave("r", "bob")) == Member("bob", "Bob", 1)
    assert roster.members("r") == [Member("alice", "Alice", 2), Member("carol", "Carol", 1)]
    # A join for a user already listed (a rename, or an event already in the listing).
    assert roster.apply(PresenceJoin("r", "alice", "Al")) == Member("alice", "Al", 2)
    assert roster.name("r", "alice") == "Al" and roster.name("r", "zed") == "zed"
    # Someone this roster never saw leaves under the user id.
    assert roster.apply(PresenceLeave("r", "zed")) == Member("zed", "zed", 0)
    roster.load("r", [Member("dave", "Dave", 1)])  # a fresh listing replaces it all
    assert roster.members("r") == [Member("dave", "Dave", 1)]
    assert "r" in roster and "s" not in roster
    roster.forget("r")
    assert roster.members("r") == [] and "r" not in roster


def test_the_roster_knows_a_room_too_big_for_events() -> None:
    roster = Roster()
    quiet = Listing([Member("alice", "Alice", 1)], events=False)
    assert quiet == [Member("alice", "Alice", 1)] and not quiet.events  # still a list
    assert Listing([]).events
    roster.load("big", quiet)
    roster.load("small", Listing([Member("bob", "Bob", 1)]))
    roster.load("plain", [Member("bob", "Bob", 1)])  # a plain list: events as usual
    assert not roster.has_events("big")
    assert roster.has_events("small") and roster.has_events("plain")
    assert roster.has_events("never-listed")
    roster.load("big", Listing([Member("alice", "Alice", 1)]))  # small again
    assert roster.has_events("big")
    roster.load("big", quiet)
    roster.forget("big")
    assert roster.has_events("big")


def query_of(client: ChatClient, url: str = "ws://127.0.0.1:8081/") -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(client._target(url))).query)


def test_user_and_name_go_on_the_upgrade_url_percent_encoded() -> None:
    awkward = "Zoë & co + 100% = ok?/#"
    assert query_of(ChatClient("ws://e/", user="a+b c", name=awkward)) == {
        "user": ["a+b c"], "name": [awkward]
    }
    assert query_of(ChatClient("ws://e/", name="Al")) == {"name": ["Al"]}
    assert query_of(ChatClient("ws://e/")) == {}
    assert query_of(ChatClient("ws://e/", user="u"), "ws://h:1/ws?x=1") == {
        "x": ["1"], "user": ["u"]
    }


def test_with_a_token_user_and_name_are_not_sent() -> None:
    assert query_of(ChatClient("ws://e/", token="t.k.n", user="u", name="N")) == {
        "token": ["t.k.n"]
    }


@pytest.mark.parametrize("options", [
    {"user": ""}, {"user": "u" * 65}, {"name": "a\nb"}, {"name": "\x7f"},
])
def test_a_user_or_name_the_edge_would_refuse_is_refused_at_once(
    options: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match=r"`(user|name)`"):
        ChatClient("ws://e/", **options)


def test_chat_client_user_and_name_settings() -> None:
    s = parse(ClientSettings, ["ws://a/", "--user", "al", "--name", "Al B"], {})
    assert (s.user, s.display_name) == ("al", "Al B")
    s = parse(ClientSettings, ["ws://a/"], {"CHAT_USER": "bo", "CHAT_DISPLAY_NAME": "Bo"})
    assert (s.user, s.display_name) == ("bo", "Bo")
    with pytest.raises(SystemExit):
        parse(ClientSettings, ["ws://a/", "--user", "x" * 65], {})


def test_who_lines_name_each_user_and_count_its_connections() -> None:
    assert describe(Member("alice", "Alice", 2)) == "Alice (alice): 2 connections"
    assert describe(Member("bob", "bob", 1)) == "bob: 1 connection"


def test_chat_client_shows_names_and_presence_lines(capsys: pytest.CaptureFixture[str]) -> None:
    client = ChatClient("ws://e/", user="me")
    client.rooms.add("r")
    client.connection_ids.add("me")  # as `joined` tells it
    session = Session(client)
    session.roster.load("r", [Member("bob", "Bob", 1)])
    ts = int(time.time() * 1000)
    for frame in (
        encode_presence_join("r", "me", "Me"),  # itself: not shown
        encode_presence_join("r", "alice", "Alice"),
        encode_chat("r", "hi\nthere", "e-1", "alice", ts, "m-1", "Alice"),
        encode_chat("r", "old edge", "e-2", "e.7", ts),  # no name: the sender id
        encode_presence_leave("r", "bob"),
        encode_presence_leave("r", "alice"),
        encode_presence_join("gone", "x", "X"),  # a room no longer joined: not shown
    ):
        for event in Tracker().receive(decode_server_frame(frame)):
            match event:
                case Delivered(message):
                    session.show(message)
                case Noted(PresenceJoin() | PresenceLeave() as news):
                    session.presence(news)
    lines = [line.split(" ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        "[r] * Alice joined",
        "[r] Alice: hi\\nthere",
        "[r] e.7: old edge",
        "[r] * Bob left",
        "[r] * Alice left",
    ]
