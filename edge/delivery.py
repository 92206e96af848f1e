"""Carrying out `edge.continuity`'s effects: frames to members, queries to the broker.

A room's frames go to its live members: everyone in it but those whose
`joined` still waits for the room's probe (what arrives before it is
history to them) and those whose replay is on its way (continuity holds
their frames). Each member gets one write per batch, its frames in order.
"""

from __future__ import annotations

from collections.abc import Collection

from edge.bus import Bus
from edge.connection import Connection
from edge.continuity import Effects
from edge.metrics import Stats
from edge.rooms import Room


def apply(fx: Effects[Connection], bus: Bus, stats: Stats) -> None:
    touched: dict[Connection, list[bytes]] = {}
    delivered = 0
    for target, frames in fx.out:
        frame = frames[0] if len(frames) == 1 else b"".join(frames)
        members: Collection[Connection]
        if isinstance(target, Room):
            members = target.members
            if target.waiting or target.replays:
                members = {
                    m for m in members if m not in target.waiting and m not in target.replays
                }
            delivered += len(frames) * len(members)
        else:
            members = target
        for member in members:
            pending = touched.get(member)
            if pending is None:
                touched[member] = [frame]
            else:
                pending.append(frame)
    stats.messages_out += delivered
    for conn, out in touched.items():
        conn.send(out[0] if len(out) == 1 else b"".join(out))
    for topic, part in fx.queries:
        bus.publish(topic, part)
