"""Who is in each room, kept up to date from a `presence` listing and the events after
it. Pure: the application feeds it what the client returns and receives.

    roster = Roster()
    await client.join("lobby", presence=True)
    roster.load("lobby", await client.presence("lobby"))
    async for item in client.events():
        if isinstance(item, PresenceJoin | PresenceLeave):
            member = roster.apply(item)

The server sends `presence_join` for a user's first connection in a room and
`presence_leave` after its last, so an event never carries a count: a user who
joins is listed with one connection until the next listing says otherwise.
Events and listings of a room come in the order the room's owner made them,
so applying them in the order they arrive, a listing replacing what was
known, gives the room as it is. After a reconnect the events missed meanwhile
are lost: load a fresh listing. A room too big for events (its listing's
`events` is False: `has_events`) changes only when it is listed again.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatclient.core import Listing, Member, PresenceEvent, PresenceJoin, PresenceLeave


class Roster:
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Member]] = {}
        self._quiet: set[str] = set()  # rooms whose last listing said: no events

    def load(self, room_id: str, members: Iterable[Member]) -> None:
        """Replace what is known of the room by a listing (`client.presence(room)`)."""
        self._rooms[room_id] = {m.user: m for m in members}
        if isinstance(members, Listing) and not members.events:
            self._quiet.add(room_id)
        else:
            self._quiet.discard(room_id)

    def has_events(self, room_id: str) -> bool:
        """False when the room's last listing said it sends no join or leave events
        (too many members): what is known of it is only as fresh as that listing."""
        return room_id not in self._quiet

    def apply(self, event: PresenceEvent) -> Member:
        """Apply an event; return the member it is about (as it was, for a leave; a
        user this roster never saw leaves under its user id as its name)."""
        users = self._rooms.setdefault(event.room_id, {})
        match event:
            case PresenceJoin(user=user, name=name):
                known = users.get(user)
                member = Member(user, name, known.connections if known else 1)
                users[user] = member
                return member
            case PresenceLeave(user=user):
                return users.pop(user, None) or Member(user, user, 0)

    def members(self, room_id: str) -> list[Member]:
        """The room's users, sorted by user id."""
        return sorted(self._rooms.get(room_id, {}).values(), key=lambda m: m.user)

    def name(self, room_id: str, user: str) -> str:
        """The user's display name in the room, or its user id when unknown."""
        member = self._rooms.get(room_id, {}).get(user)
        return member.name if member is not None else user

    def forget(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)
        self._quiet.discard(room_id)

    def __contains__(self, room_id: object) -> bool:
        return room_id in self._rooms
