"""A client's frame, carried out: the pure handler decides, this executes.

`edge.session.FrameHandler` turns a frame into intents; each intent is done
here on real things: a reply written to the connection, a chat queued for
the broker, a room subscribed (and probed until live) or unsubscribed, the
connection closed.
"""

from __future__ import annotations

from edge.connection import Connection
from edge.liveness import BrokerPath
from edge.metrics import Stats
from edge.publishing import PublishQueue
from edge.session import Close, FrameHandler, Intent, Publish, Reply, Subscribe, Unsubscribe
from protocol.frames import text_frame


class Dispatcher:
    def __init__(
        self,
        handler: FrameHandler[Connection],
        publishes: PublishQueue,
        path: BrokerPath,
        stats: Stats,
    ) -> None:
        self._handler = handler
        self._publishes = publishes
        self._path = path
        self._stats = stats

    # edge.connection.Receiver

    def message(self, conn: Connection, data: bytes) -> None:
        self._execute(conn, self._handler.handle(conn, conn.client, data))

    def binary(self, conn: Connection) -> None:
        self._execute(conn, self._handler.binary_frame())

    def leave_rooms(self, conn: Connection) -> None:
        """A connection ended: out of every room, unsubscribing those left empty."""
        self._execute(conn, self._handler.disconnect(conn))

    def _execute(self, conn: Connection, intents: list[Intent]) -> None:
        for intent in intents:
            match intent:
                case Publish(topic, body):
                    self._publishes.put(topic, body)
                case Reply(frame, error):
                    conn.send(text_frame(frame))
                    if error is not None:
                        self._stats.errors[error] += 1
                case Subscribe(topic):
                    self._path.subscribe(topic)
                case Unsubscribe(topic):
                    self._path.unsubscribe(topic)
                case Close(code, reason, why):
                    conn.close(code, reason, why)
