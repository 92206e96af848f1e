"""Each room's stream at this edge, without holes: offsets checked, gaps repaired,
replays merged with the live stream (protocol v2 sections 2 to 6). Pure.

An edge sees a room's chats in the sequencer's order, each stamped with its
epoch and offset. This module keeps, per room, the last offset delivered and
decides what each chat means:

- the next offset: deliver it;
- an offset already delivered: drop it (a repair overlapped the live stream);
- a hole: hold this chat and what follows, ask the sequencer for the missing
  ones, deliver them and then the held ones; if history no longer has them,
  tell every member `resync` first;
- another epoch: the stream restarted; `resync` to the new epoch, go on.

A join with `history` or `since` is answered by a query too. The member's
live chats are held while it is outstanding; the reply comes through the
same pipe as the room's chats, so it counts exactly the chats delivered
before it. Then: `joined`, the replay, the held chats above the replay's
end, and the member is live.

Everything here is data in, effects out: the fan-out (`edge.fanout`) and the
dispatcher write the frames and publish the queries.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from edge.rooms import JoinSpec, Repair, Replay, Room, RoomRegistry
from protocol.codec import encode_joined, encode_resync
from protocol.frames import text_frame
from protocol.stream import (
    CHAT_SEPARATOR,
    HistoryQuery,
    HistoryReply,
    query_part,
    read_stamp,
    unpack,
)

M = TypeVar("M", bound=Hashable)

QUERY_TIMEOUT = 5.0  # seconds: a reply later than this is taken as lost


class Asked(NamedTuple):
    room: Room  # type: ignore[type-arg]
    deadline: float
    replay: Replay | None  # type: ignore[type-arg]  # None: a repair
    part: bytes  # the query, to ask again once if its reply is lost
    retried: bool


@dataclass(slots=True)
class Effects(Generic[M]):
    """What the I/O shell must do, in order: frames to write, queries to publish.

    A frame for a room goes to the room's live members. When the room has
    members still settling (waiting for its probe, or for their replay),
    who counts as live is fixed at the moment the frame is made, so that a
    replay finishing later in the same batch cannot make a member get a
    frame twice (once held for its replay, once live).
    """

    out: list[tuple[Room[M] | list[M], list[bytes]]] = field(default_factory=list)
    queries: list[tuple[bytes, bytes]] = field(default_factory=list)  # (topic, part)

    def room_frame(self, room: Room[M], frame: bytes) -> None:
        target: Room[M] | list[M] = room
        if room.waiting or room.replays:
            target = [m for m in room.members if m not in room.waiting and m not in room.replays]
        out = self.out
        if out and out[-1][0] is target:
            out[-1][1].append(frame)
        else:
            out.append((target, [frame]))

    def member_frame(self, member: M, frame: bytes) -> None:
        self.out.append(([member], [frame]))


class Continuity(Generic[M]):
    def __init__(
        self, rooms: RoomRegistry[M], origin: bytes, history_max: int, recovery_max: int
    ) -> None:
        self.rooms = rooms
        self.origin = origin  # this edge's topic: where replies come
        self.history_max = history_max
        self.recovery_max = recovery_max
        self._asked: dict[int, Asked] = {}
        self._last_request = 0
        self.active: dict[Room[M], bool] = {}  # rooms with chats lately: busy this second?
        self.repairs = 0  # holes filled from history
        self.resyncs = 0  # holes that could not be filled, and epoch changes

    # Chats from the sequencer.

    def chats(self, room: Room[M], parts: list[bytes], now: float, fx: Effects[M]) -> None:
        """Stamped chats of one room (parts of one chat or several packed), as they arrived."""
        chat = self._chat
        for part in parts:
            if CHAT_SEPARATOR in part:
                for body in unpack(part):
                    chat(room, body, now, fx)
            else:
                chat(room, part, now, fx)

    def _chat(self, room: Room[M], body: bytes, now: float, fx: Effects[M]) -> None:
        if room.repair is not None:
            room.repair.held.append(body)
            return
        stamp = read_stamp(body)
        if stamp is None:
            self._deliver(room, -1, text_frame(body), fx)  # unsequenced: passed as it is
            return
        epoch_bytes, offset = stamp
        if room.epoch is None:
            return  # not live yet: this chat is before the probe's top, so history
        epoch = epoch_bytes.decode(errors="replace")  # a sequencer's epochs are ASCII
        if epoch != room.epoch:
            # The stream restarted (its history lost): continuity is broken.
            # Say so at once; what the new stream already holds is still fetched.
            self._resync(room, epoch, 0, fx)
            if offset > 1:
                self._start_repair(room, offset - 1, body, now, fx)
                return
        elif offset <= room.last:
            return  # already delivered (a repair overlapped the live stream)
        elif offset > room.last + 1:
            self._start_repair(room, offset - 1, body, now, fx)
            return
        room.last = offset
        self.active[room] = True
        self._deliver(room, offset, text_frame(body), fx)

    def gone_quiet(self) -> list[Room[M]]:
        """Rooms that had chats before the previous call and none since.

        A hole at the very end of a burst shows no later chat to reveal it;
        a probe of such a room, stamped with its top, does (`went_live`).
        Called once a second, so a room is probed once per burst, not per chat.
        """
        quiet = [room for room, busy in self.active.items() if not busy]
        for room in quiet:
            del self.active[room]
        for room in self.active:
            self.active[room] = False
        return quiet

    def _deliver(self, room: Room[M], offset: int, frame: bytes, fx: Effects[M]) -> None:
        fx.room_frame(room, frame)
        for replay in room.replays.values():
            replay.held.append((-1 if replay.resynced else offset, frame))

    def _resync(self, room: Room[M], epoch: str, top: int, fx: Effects[M]) -> None:
        self.resyncs += 1
        for replay in room.replays.values():
            replay.resynced = True
        room.epoch = epoch
        room.last = top
        self._deliver(room, -1, text_frame(encode_resync(room.room_id, epoch, top)), fx)

    def _new_stream(self, room: Room[M], epoch: str, top: int, now: float,
                    fx: Effects[M]) -> None:
        """The room's stream restarted (a new epoch) and is at `top` already: members
        get `resync` to its start, then its chats up to `top` from history, like
        any hole (they were acknowledged to their senders)."""
        self._resync(room, epoch, 0, fx)
        if top > 0:
            room.repair = Repair(top)
            self._ask(room, epoch, 0, top, top, None, now, fx)

    def _start_repair(
        self, room: Room[M], upto: int, body: bytes, now: float, fx: Effects[M]
    ) -> None:
        assert room.epoch is not None
        room.repair = Repair(upto, [body])
        self._ask(room, room.epoch, room.last, upto, upto - room.last, None, now, fx)

    def _ask(
        self,
        room: Room[M],
        epoch: str | None,
        after: int,
        upto: int,
        limit: int,
        replay: Replay[M] | None,
        now: float,
        fx: Effects[M],
    ) -> None:
        self._last_request += 1
        request_id = self._last_request
        query = query_part(
            HistoryQuery(self.origin, request_id, room.room_id, epoch, after, upto, limit)
        )
        self._asked[request_id] = Asked(room, now + QUERY_TIMEOUT, replay, query, False)
        fx.queries.append((room.topic, query))

    # The room's probe came back: its stream position at that point.

    def went_live(
        self,
        room: Room[M],
        epoch: str,
        top: int,
        waiting: list[tuple[M, JoinSpec]],
        now: float,
        fx: Effects[M],
    ) -> None:
        """The room's subscription is proven (again), or a quiet room's tail was
        probed: the stream at (epoch, top) at the probe's place."""
        if room.epoch is None:
            room.epoch, room.last = epoch, top
        elif room.repair is None:
            if epoch != room.epoch:
                self._new_stream(room, epoch, top, now, fx)
            elif top > room.last:
                # Chats sent while the path was broken: fetch them like any hole.
                room.repair = Repair(top)
                self._ask(room, epoch, room.last, top, top - room.last, None, now, fx)
        for member, spec in waiting:
            self.join(room, member, spec, now, fx)

    def tail(self, room: Room[M], epoch: str, top: int, now: float, fx: Effects[M]) -> None:
        """A quiet room's tail probe came back: chats up to `top` were sent before it."""
        if room.repair is None and epoch == room.epoch and top > room.last:
            room.repair = Repair(top)  # the end of a burst was lost: fetch it
            self._ask(room, epoch, room.last, top, top - room.last, None, now, fx)

    # Joins.

    def rejoined(self, room: Room[M], member: M, spec: JoinSpec, fx: Effects[M]) -> None:
        """A join from a member already live here: where the stream is, nothing replayed."""
        assert room.epoch is not None
        fx.member_frame(member, text_frame(
            encode_joined(room.room_id, spec.connection_id, room.epoch, room.last)
        ))

    def join(self, room: Room[M], member: M, spec: JoinSpec, now: float, fx: Effects[M]) -> None:
        """A join into a live room: `joined` now, or once its history is here."""
        epoch, top = room.epoch, room.last
        assert epoch is not None
        if room.repair is not None:
            top = room.repair.upto  # the hole is being filled; the member starts after it
        since, history = spec.since, spec.history
        if since is None and not history and room.repair is None:
            fx.member_frame(member, text_frame(
                encode_joined(room.room_id, spec.connection_id, epoch, top)
            ))
            return
        if (since is not None and since.epoch == epoch and since.offset == top
                and room.repair is None):
            fx.member_frame(member, text_frame(
                encode_joined(room.room_id, spec.connection_id, epoch, top, True)
            ))
            return  # nothing missed
        replay = Replay(member, spec, epoch, top)
        room.replays[member] = replay
        want = min(history or 0, self.history_max)
        if since is not None and since.epoch == epoch and since.offset >= top:
            # Nothing missed here; the client may even be ahead of this edge.
            # The query is a barrier: its reply comes after the stream has
            # caught up with the sequencer, so the client's position is then
            # either known to the stream, or bogus (and `history` applies:
            # the query asks for the last K too).
            after = max(min(since.offset, top - want), 0)
            self._ask(room, epoch, after, since.offset, since.offset - after, replay, now, fx)
            return
        elif since is not None and since.epoch == epoch and top - since.offset <= self.recovery_max:
            after = min(since.offset, top - want)
        else:
            after = max(top - want, 0)
        self._ask(room, epoch, after, max(after, top), max(top - after, 0), replay, now, fx)

    def _finish(
        self,
        room: Room[M],
        replay: Replay[M],
        chats: list[bytes],
        recovered: bool | None,
        fx: Effects[M],
    ) -> None:
        """`joined`, then the replay, then the live chats held meanwhile."""
        if room.replays.get(replay.member) is not replay:
            return  # the member left, or joined again meanwhile
        del room.replays[replay.member]
        spec = replay.spec
        out = [text_frame(encode_joined(
            room.room_id, spec.connection_id, replay.epoch, replay.upto, recovered
        ))]
        out += [text_frame(chat) for chat in chats]
        out += [frame for offset, frame in replay.held if offset < 0 or offset > replay.upto]
        fx.member_frame(replay.member, b"".join(out))

    # Replies and their deadlines.

    def reply(self, reply: HistoryReply, now: float, fx: Effects[M]) -> None:
        asked = self._asked.pop(reply.request_id, None)
        if asked is None:
            return  # late: already given up on
        if asked.replay is None:
            self._repaired(asked.room, reply, now, fx)
        else:
            self._replayed(asked.room, asked.replay, reply, now, fx)

    def _replayed(
        self,
        room: Room[M],
        replay: Replay[M],
        reply: HistoryReply | None,
        now: float,
        fx: Effects[M],
    ) -> None:
        spec, since, epoch = replay.spec, replay.spec.since, replay.epoch
        answered = reply is not None and reply.epoch == epoch
        chats = reply.chats if reply is not None and answered else []
        recovered: bool | None = None
        if since is not None:
            if since.epoch != epoch or not answered:
                recovered = False
            elif since.offset >= replay.upto:
                assert reply is not None
                recovered = since.offset <= reply.top  # else a position never reached
                if recovered and room.last < since.offset and replay.barriers < 3:
                    # This edge has not delivered up to the client's position
                    # yet (a repair is on its way): finishing now would let
                    # the repaired chats reach the member twice. Ask again:
                    # the reply comes after the repair's.
                    replay.barriers += 1
                    self._ask(room, epoch, since.offset, since.offset, 0, replay, now, fx)
                    return
                if recovered:
                    replay.upto = since.offset
                    chats = []
            else:
                offsets = [_offset(c) for c in chats]
                wanted = list(range(since.offset + 1, replay.upto + 1))
                recovered = len(wanted) <= self.recovery_max and (
                    offsets[-len(wanted):] == wanted if wanted else True
                )
                if recovered:
                    chats = chats[len(chats) - len(wanted):] if wanted else []
        if not recovered:
            want = min(spec.history or 0, self.history_max)
            chats = [c for c in chats if _offset(c) <= replay.upto]
            chats = chats[-want:] if want else []
        self._finish(room, replay, chats, recovered, fx)

    def _repaired(
        self, room: Room[M], reply: HistoryReply | None, now: float, fx: Effects[M]
    ) -> None:
        repair = room.repair
        if repair is None:
            return
        room.repair = None
        filled = (
            reply is not None and reply.complete and reply.epoch == room.epoch
            and all(_offset(c) > room.last for c in reply.chats)
        )
        if filled and reply is not None:
            self.repairs += 1
            for chat in reply.chats:
                offset = _offset(chat)
                if offset == room.last + 1:
                    room.last = offset
                    self._deliver(room, offset, text_frame(chat), fx)
        elif reply is not None and reply.epoch != room.epoch:
            # The stream restarted meanwhile: what was held of the old epoch
            # can never be repaired now. The new epoch is announced by its
            # first held chat, or here if none is held.
            old = (room.epoch or "").encode()
            repair.held = [c for c in repair.held if (read_stamp(c) or (old, 0))[0] != old]
            if not repair.held:
                self._new_stream(room, reply.epoch, reply.top, now, fx)
        else:
            assert room.epoch is not None
            # History no longer has them: same epoch, members told where it resumes.
            self._resync(room, room.epoch, repair.upto, fx)
        held, repair.held = repair.held, []
        self.chats(room, held, now, fx)

    def expire(self, now: float, fx: Effects[M]) -> None:
        """Queries whose reply did not come in time: asked once more (the first may
        have been dropped at a full pipe), then taken as answered with nothing."""
        late = [rid for rid, asked in self._asked.items() if asked.deadline <= now]
        for request_id in late:
            asked = self._asked.pop(request_id)
            if not asked.retried:
                self._asked[request_id] = asked._replace(
                    deadline=now + QUERY_TIMEOUT, retried=True
                )
                fx.queries.append((asked.room.topic, asked.part))
                continue
            if asked.replay is None:
                self._repaired(asked.room, None, now, fx)
            else:
                self._replayed(asked.room, asked.replay, None, now, fx)


def _offset(chat: bytes) -> int:
    stamp = read_stamp(chat)
    return -1 if stamp is None else stamp[1]
