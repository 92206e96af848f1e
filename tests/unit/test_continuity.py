"""An edge's view of a room's stream, merged without holes or repeats. No sockets:
the broker's own sequencer (also pure) makes the stamped chats and the replies."""

from __future__ import annotations

import json
from typing import Any

from broker.streams import Limits, Sequencer
from edge.continuity import QUERY_TIMEOUT, Continuity, Effects
from edge.rooms import JoinSpec, Room, RoomRegistry
from protocol.codec import encode_chat
from protocol.messages import Position
from protocol.stream import read_query, read_reply
from protocol.topics import edge_topic, room_topic

ORIGIN = edge_topic("edge")
TOPIC = room_topic("r")


class World:
    """One room, one sequencer, one edge's continuity, and what members received."""

    def __init__(self, recovery_max: int = 1000) -> None:
        self.seq = Sequencer(Limits(50, 600.0, 1 << 20, 120.0), lambda: "E1")
        self.rooms: RoomRegistry[str] = RoomRegistry(32)
        self.cont: Continuity[str] = Continuity(self.rooms, ORIGIN, 100, recovery_max)
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.n = 0

    def room(self) -> Room[str]:
        room = self.rooms.room(TOPIC)
        assert room is not None
        return room

    def send(self, count: int) -> list[bytes]:
        """`count` chats sequenced; their stamped bytes, as the edge would receive them."""
        bodies = []
        for _ in range(count):
            self.n += 1
            bodies.append(encode_chat("r", f"m{self.n}", f"id{self.n}", "u", 0))
        out = self.seq.sequence(TOPIC, bodies, 0.0)
        assert out is not None
        return out.forward

    def apply(self, fx: Effects[str]) -> list[bytes]:
        """Deliver effects as the shell would; answer queries with the sequencer."""
        for target, frames in fx.out:
            if isinstance(target, Room):
                room = target
                members = [m for m in room.members
                           if m not in room.waiting and m not in room.replays]
            else:
                members = target
            for member in members:
                for frame in frames:
                    self._take(member, frame)
        return [part for _, part in fx.queries]

    def _take(self, member: str, frames: bytes) -> None:
        # Server frames are unmasked text: 0x81, a length, the JSON.
        while frames:
            n = frames[1]
            head = 2
            if n == 126:
                n, head = int.from_bytes(frames[2:4], "big"), 4
            elif n == 127:
                n, head = int.from_bytes(frames[2:10], "big"), 10
            self.got.setdefault(member, []).append(json.loads(frames[head : head + n]))
            frames = frames[head + n :]

    def answer(self, parts: list[bytes], now: float = 0.0) -> None:
        for part in parts:
            out = self.seq.sequence(TOPIC, [part], 0.0)
            assert out is not None
            for _, note in out.notes:
                fx: Effects[str] = Effects()
                self.cont.reply(read_reply(note), now, fx)
                self.answer(self.apply(fx), now)

    def answer_once(self, parts: list[bytes]) -> list[bytes]:
        """Answer these queries only; return the queries their replies led to."""
        more: list[bytes] = []
        for part in parts:
            out = self.seq.sequence(TOPIC, [part], 0.0)
            assert out is not None
            for _, note in out.notes:
                fx: Effects[str] = Effects()
                self.cont.reply(read_reply(note), 0.0, fx)
                more += self.apply(fx)
        return more

    def chats(self, bodies: list[bytes]) -> list[bytes]:
        fx: Effects[str] = Effects()
        self.cont.chats(self.room(), bodies, 0.0, fx)
        return self.apply(fx)

    def join(self, member: str, spec: JoinSpec) -> list[bytes]:
        self.rooms.join(member, "r", spec)
        room = self.room()
        fx: Effects[str] = Effects()
        if room.epoch is None:  # the first member: the room's probe comes back
            token = self.rooms.probe_due(room, 0.0, 0.1)
            assert token is not None
            proven = self.rooms.probe_returned(TOPIC, token)
            assert proven is not None
            stream = self.seq.stream(TOPIC)
            assert stream is not None
            self.cont.went_live(room, stream.epoch, stream.top, proven[1], 0.0, fx)
        else:
            self.cont.join(room, member, spec, 0.0, fx)
        return self.apply(fx)

    def offsets(self, member: str) -> list[int]:
        return [f["payload"]["offset"] for f in self.got.get(member, []) if f["type"] == "chat"]

    def kinds(self, member: str) -> list[str]:
        return [f["type"] for f in self.got.get(member, [])]


def test_a_join_learns_the_position_from_the_probe_and_chats_follow_in_order() -> None:
    w = World()
    w.send(3)  # before anyone is here: history
    assert w.join("a", JoinSpec("ca")) == []
    assert w.got["a"][0]["payload"] == {
        "roomId": "r", "connectionId": "ca", "epoch": "E1", "offset": 3
    }
    assert w.chats(w.send(2)) == []
    assert w.offsets("a") == [4, 5]


def test_chats_before_the_probe_are_not_delivered() -> None:
    w = World()
    early = w.send(2)
    w.rooms.join("a", "r", JoinSpec("ca"))
    w.chats(early)  # they arrive before the probe: history to the joiner
    assert "a" not in w.got


def test_a_repeated_chat_is_dropped() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(2)
    w.chats(chats)
    w.chats(chats[1:])
    assert w.offsets("a") == [1, 2]


def test_a_hole_is_repaired_from_history_before_anything_later() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(5)
    queries = w.chats([chats[0], chats[3]])  # 2 and 3 were lost on the way
    assert len(queries) == 1
    query = read_query(queries[0])
    assert (query.after, query.upto) == (1, 3)
    w.chats([chats[4]])  # held while the repair is out
    assert w.offsets("a") == [1]
    w.answer(queries)
    assert w.offsets("a") == [1, 2, 3, 4, 5]
    assert w.cont.repairs == 1


def test_a_hole_history_no_longer_holds_is_a_resync_in_the_same_epoch() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(60)  # history keeps 50: 1..10 are gone
    w.chats(chats[:1])
    queries = w.chats(chats[10:11])  # 2..10 missing, and trimmed
    w.answer(queries)
    assert w.kinds("a")[:3] == ["joined", "chat", "resync"]
    resync = w.got["a"][2]["payload"]
    assert (resync["epoch"], resync["offset"]) == ("E1", 10)
    assert w.offsets("a") == [1, 11]


def test_a_new_epoch_is_a_resync_before_its_first_chat() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(2))
    restarted = Sequencer(Limits(50, 600.0, 1 << 20, 120.0), lambda: "E2")
    out = restarted.sequence(TOPIC, [encode_chat("r", "x", "i", "u", 0)], 0.0)
    assert out is not None
    w.chats(out.forward)
    assert w.kinds("a") == ["joined", "chat", "chat", "resync", "chat"]
    assert w.got["a"][3]["payload"] == {"roomId": "r", "epoch": "E2", "offset": 0}


def test_history_on_join_comes_before_live_chats_with_nothing_twice() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(10))
    queries = w.join("b", JoinSpec("cb", history=4))
    assert "b" not in w.got  # joined waits for the replay
    w.chats(w.send(2))  # live meanwhile: held for b
    w.answer(queries)
    assert w.kinds("b")[0] == "joined"
    assert w.got["b"][0]["payload"]["offset"] == 10
    assert w.offsets("b") == [7, 8, 9, 10, 11, 12]
    assert w.offsets("a") == list(range(1, 13))


def test_since_recovers_exactly_what_was_missed() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(20))
    queries = w.join("b", JoinSpec("cb", since=Position("E1", 12)))
    w.chats(w.send(3))
    w.answer(queries)
    joined = w.got["b"][0]["payload"]
    assert (joined["recovered"], joined["offset"]) == (True, 20)
    assert w.offsets("b") == list(range(13, 24))


def test_since_that_cannot_be_recovered_says_so_and_falls_back_to_history() -> None:
    w = World(recovery_max=5)
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(20))
    w.answer(w.join("b", JoinSpec("cb", since=Position("E1", 2), history=3)))  # 18 missed
    assert w.got["b"][0]["payload"]["recovered"] is False
    assert w.offsets("b") == [18, 19, 20]
    w.answer(w.join("c", JoinSpec("cc", since=Position("OLD", 19))))
    assert w.got["c"][0]["payload"]["recovered"] is False
    assert w.offsets("c") == []


def test_since_at_the_top_is_recovered_with_nothing_to_replay() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(4))
    assert w.join("b", JoinSpec("cb", since=Position("E1", 4))) == []
    assert w.got["b"][0]["payload"]["recovered"] is True
    w.chats(w.send(1))
    assert w.offsets("b") == [5]


def test_a_client_ahead_of_this_edge_gets_nothing_twice() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(6)
    w.chats(chats[:3])  # this edge has 1..3; the client saw up to 5 elsewhere
    queries = w.join("b", JoinSpec("cb", since=Position("E1", 5)))
    w.chats(chats[3:])
    w.answer(queries)
    assert w.got["b"][0]["payload"]["recovered"] is True
    assert w.offsets("b") == [6]


def test_a_lost_reply_ends_in_a_resync_or_recovered_false() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(4)
    w.chats([chats[0], chats[2]])  # a hole; the reply never comes
    w.join("b", JoinSpec("cb", since=Position("E1", 1)))
    fx: Effects[str] = Effects()
    w.cont.expire(QUERY_TIMEOUT + 1, fx)
    assert len(fx.queries) == 2  # each asked once more: a reply may be lost at a full pipe
    w.cont.expire(2 * QUERY_TIMEOUT + 2, fx)
    w.apply(fx)
    assert "resync" in w.kinds("a")
    assert w.got["b"][0]["payload"]["recovered"] is False
    w.chats(chats[3:])
    assert w.offsets("a")[-1] == 4


def test_a_join_during_a_repair_starts_after_the_hole() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(4)
    queries = w.chats([chats[0], chats[3]])  # hole: 2 and 3
    queries += w.join("b", JoinSpec("cb"))  # joins while the hole is being filled
    w.answer(queries)
    assert w.got["b"][0]["payload"]["offset"] == 3
    assert w.offsets("b") == [4]  # nothing at or below its joined offset
    assert w.offsets("a") == [1, 2, 3, 4]


def test_a_lost_tail_is_found_by_probing_the_room_once_it_is_quiet() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(5)
    w.chats(chats[:3])  # 4 and 5 never arrive, and nothing comes after them
    assert w.cont.gone_quiet() == []  # busy this second
    assert w.cont.gone_quiet() == [w.room()]  # then quiet: probe it
    stream = w.seq.stream(TOPIC)
    assert stream is not None
    fx: Effects[str] = Effects()
    w.cont.tail(w.room(), stream.epoch, stream.top, 0.0, fx)
    w.answer(w.apply(fx))
    assert w.offsets("a") == [1, 2, 3, 4, 5]


def test_a_new_epoch_seen_late_is_resynced_and_what_it_holds_fetched() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(2))
    w.seq = Sequencer(Limits(50, 600.0, 1 << 20, 120.0), lambda: "E2")  # restarted
    chats = w.send(3)
    w.answer(w.chats(chats[2:]))  # 1 and 2 of the new stream were missed
    assert w.kinds("a")[3] == "resync"
    assert w.got["a"][3]["payload"]["offset"] == 0
    assert w.offsets("a") == [1, 2, 1, 2, 3]


def test_since_beyond_the_stream_with_history_falls_back_to_history() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(6))
    w.answer(w.join("b", JoinSpec("cb", since=Position("E1", 99), history=2)))
    assert w.got["b"][0]["payload"]["recovered"] is False
    assert w.offsets("b") == [5, 6]


def test_a_client_ahead_of_this_edge_while_a_hole_is_repaired_gets_nothing_twice() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(13)
    w.chats(chats[:10])  # this edge delivered 1..10; the client saw up to 12 elsewhere
    barrier = w.join("b", JoinSpec("cb", since=Position("E1", 12)))
    repair = w.chats([chats[11]])  # 11 lost on the way here: a repair, asked after the barrier
    # The sequencer answers in the order it was asked: the barrier, the
    # repair, then whatever the barrier's reply asked again.
    again = w.answer_once(barrier)
    w.answer(repair)
    w.answer(again)
    w.chats(chats[12:])
    assert w.got["b"][0]["payload"]["recovered"] is True
    assert w.offsets("b") == [13]
    assert w.offsets("a") == list(range(1, 14))


def test_a_member_joining_again_during_a_repair_misses_nothing() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    chats = w.send(4)
    w.chats(chats[:1])
    repair = w.chats(chats[3:])  # 2 and 3 lost: repaired, 4 held
    fx: Effects[str] = Effects()
    w.cont.rejoined(w.room(), "a", JoinSpec("ca"), fx)  # what the session does for a member
    w.apply(fx)
    w.answer(repair)
    assert w.kinds("a")[2] == "joined"
    assert w.offsets("a") == [1, 2, 3, 4]


def test_a_replay_that_spans_a_restart_keeps_the_new_epochs_chats() -> None:
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(10))
    queries = w.join("b", JoinSpec("cb", history=3))
    w.seq = Sequencer(Limits(50, 600.0, 1 << 20, 120.0), lambda: "E2")  # restarted
    w.chats(w.send(3))
    w.answer(queries)
    kinds = [(f["type"], f["payload"].get("offset")) for f in w.got["b"]]
    assert kinds[0][0] == "joined" and ("resync", 0) in kinds
    assert [o for k, o in kinds if k == "chat"][-3:] == [1, 2, 3]  # E2's, after the resync


def test_a_new_epoch_found_by_a_probe_is_fetched_from_its_start() -> None:
    # The broker restarted without its store, and a chat was sequenced in the
    # new stream before this edge's subscription was back: its probe shows
    # (E2, 1). That chat was acknowledged to its sender: members must get it.
    w = World()
    w.join("a", JoinSpec("ca"))
    w.chats(w.send(2))
    w.seq = Sequencer(Limits(50, 600.0, 1 << 20, 120.0), lambda: "E2")
    w.send(1)  # E2 offset 1, never forwarded to this edge
    fx: Effects[str] = Effects()
    w.cont.went_live(w.room(), "E2", 1, [], 0.0, fx)
    queries = w.apply(fx)
    assert queries  # the new stream's start is asked for
    w.answer(queries)
    assert w.kinds("a") == ["joined", "chat", "chat", "resync", "chat"]
    assert w.got["a"][3]["payload"] == {"roomId": "r", "epoch": "E2", "offset": 0}
    assert w.got["a"][4]["payload"]["epoch"] == "E2" and w.offsets("a") == [1, 2, 1]
