"""The pure frame handler: frames in, intents out, no sockets."""

from __future__ import annotations

import json
from typing import Any

from edge.auth import Identity
from edge.rooms import JoinSpec, RoomRegistry
from edge.session import (
    Admit,
    Await,
    Client,
    FrameHandler,
    Intent,
    Publish,
    Reply,
    Subscribe,
    Unsubscribe,
)
from protocol.errors import ErrorCode
from protocol.ids import Sequence
from protocol.topics import room_topic


def make(max_rooms: int = 32, max_chars: int = 10) -> FrameHandler[str]:
    return FrameHandler(RoomRegistry(max_rooms), Sequence("e", "-"), lambda: 1234, max_chars)


def frame(kind: str, **payload: Any) -> str:
    return json.dumps({"type": kind, "payload": payload})


def reply_json(intents: list[Intent]) -> dict[str, Any]:
    assert len(intents) == 1 and isinstance(intents[0], Reply), intents
    value: dict[str, Any] = json.loads(intents[0].frame)
    return value


def C(connection_id: str) -> Client:
    return Client(connection_id, None, None)


def live(h: FrameHandler[str], room: str) -> list[tuple[str, JoinSpec]]:
    """The room's probe comes back: the joins now due."""
    found = h.registry.room_by_id(room)
    assert found is not None
    token = h.registry.probe_due(found, now=0.0, retry=0.1)
    assert token is not None
    proven = h.registry.probe_returned(found.topic, token)
    assert proven is not None
    found.epoch = "E"  # what edge.continuity learns from the probe's stamp
    return proven[1]


def test_join_subscribes_then_acknowledges_when_live() -> None:
    h = make()
    assert h.handle("a", C("ca"), frame("join", roomId="r")) == [
        Subscribe(room_topic("r")), Await(room_topic("r"))
    ]
    assert h.handle("b", C("cb"), frame("join", roomId="r")) == [Await(room_topic("r"))]
    assert live(h, "r") == [("a", JoinSpec("ca")), ("b", JoinSpec("cb"))]
    assert h.handle("c", C("cc"), frame("join", roomId="r", history=3)) == [
        Admit(room_topic("r"), JoinSpec("cc", history=3))
    ]
    # Joining again replays nothing.
    assert h.handle("c", C("cc"), frame("join", roomId="r", history=3)) == [
        Admit(room_topic("r"), JoinSpec("cc"), again=True)
    ]


def test_a_chat_with_a_msgid_is_keyed_and_its_errors_name_it() -> None:
    h = make()
    [intent] = h.handle("a", C("ca"), frame("chat", message="hi", msgId="m-1"))
    assert reply_json([intent])["payload"] == {
        "code": "not_in_room", "message": "join a room before chatting", "msgId": "m-1"
    }
    h.handle("a", C("ca"), frame("join", roomId="r"))
    live(h, "r")
    [publish] = h.handle("a", C("ca"), frame("chat", message="hi", msgId="m-1"))
    assert isinstance(publish, Publish)
    assert (publish.room_id, publish.msg_id, publish.key) == ("r", "m-1", "m-1")
    assert json.loads(publish.body)["payload"]["msgId"] == "m-1"
    alice = Client("ca", Identity("alice", 0, None), None)
    [publish] = h.handle("a", alice, frame("chat", message="hi", msgId="m-1"))
    assert isinstance(publish, Publish) and publish.key == "alice\x00m-1"  # scoped by user
    # In open mode the URL's user and name; with a token its sub and `name` claim.
    bob = Client("cb", None, None, "bob", "Bob B.")
    [publish] = h.handle("a", bob, frame("chat", message="hi", msgId="m-2"))
    assert isinstance(publish, Publish)
    assert (json.loads(publish.body)["payload"]["from"], publish.key) == ("bob", "m-2")
    assert json.loads(publish.body)["payload"]["name"] == "Bob B."
    carol = Client("cc", Identity("carol", 0, None, "Carol"), None, "ignored", "ignored")
    [publish] = h.handle("a", carol, frame("chat", message="hi"))
    assert isinstance(publish, Publish)
    payload = json.loads(publish.body)["payload"]
    assert (payload["from"], payload["name"]) == ("carol", "Carol")
    bad = reply_json(h.handle("a", C("ca"), frame("chat", message="hi", msgId="no spaces")))
    assert bad["payload"]["code"] == "invalid_payload"


def test_chat_is_encoded_once_for_the_broker() -> None:
    h = make()
    h.handle("a", C("ca"), frame("join", roomId="r"))
    live(h, "r")
    [intent] = h.handle("a", C("ca"), frame("chat", message="hi"))
    assert isinstance(intent, Publish)
    assert intent.topic == room_topic("r")
    assert json.loads(intent.body) == {
        "type": "chat",
        "payload": {"roomId": "r", "message": "hi", "id": "e-1", "from": "ca", "ts": 1234,
                    "name": "ca"},
    }


def test_chat_errors() -> None:
    h = make(max_chars=3)
    assert reply_json(h.handle("a", C("ca"), frame("chat", message="x")))["payload"]["code"] == (
        "not_in_room"
    )
    h.handle("a", C("ca"), frame("join", roomId="r1"))
    h.handle("a", C("ca"), frame("join", roomId="r2"))
    codes = [
        reply_json(h.handle("a", C("ca"), f))["payload"]["code"]
        for f in (
            frame("chat", message="x"),
            frame("chat", message="x", roomId="r3"),
            frame("chat", message="four", roomId="r1"),
        )
    ]
    assert codes == ["room_required", "not_in_room", "invalid_payload"]
    [ok] = h.handle("a", C("ca"), frame("chat", message="abc", roomId="r1"))
    assert isinstance(ok, Publish)


def test_leave_and_disconnect_unsubscribe_the_last_member() -> None:
    h = make()
    h.handle("a", C("ca"), frame("join", roomId="r"))
    h.handle("b", C("cb"), frame("join", roomId="r"))
    h.handle("b", C("cb"), frame("join", roomId="s"))
    left = h.handle("a", C("ca"), frame("leave", roomId="r"))
    assert len(left) == 1 and json.loads(left[0].frame)["type"] == "left"  # type: ignore[union-attr]
    assert sorted(h.disconnect("b", C("cb"), abrupt=True)) == sorted(
        [Unsubscribe(room_topic("r")), Unsubscribe(room_topic("s"))]
    )
    notin = reply_json(h.handle("a", C("ca"), frame("leave", roomId="r")))
    assert notin["payload"]["code"] == "not_in_room"


def test_too_many_rooms_and_ping() -> None:
    h = make(max_rooms=1)
    h.handle("a", C("ca"), frame("join", roomId="r"))
    intents = h.handle("a", C("ca"), frame("join", roomId="s"))
    assert isinstance(intents[0], Reply) and intents[0].error is ErrorCode.TOO_MANY_ROOMS
    assert reply_json(h.handle("a", C("ca"), '{"type":"ping"}')) == {"type": "pong"}
    assert reply_json(h.binary_frame())["payload"]["code"] == "bad_json"


def test_a_join_not_live_by_its_deadline_is_undone() -> None:
    h = make()
    h.handle("a", C("ca"), frame("join", roomId="r"))
    [refusal, unsubscribe] = h.join_timed_out("a", C("ca"), room_topic("r"))
    assert reply_json([refusal])["payload"]["code"] == "unavailable"
    assert unsubscribe == Unsubscribe(room_topic("r"))
    assert not h.registry.is_member("a", "r")
    assert h.join_timed_out("a", C("ca"), room_topic("r")) == []  # once
