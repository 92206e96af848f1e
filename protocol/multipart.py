"""Whole ZeroMQ messages in and out, fast: shared by the broker and the edges.

pyzmq's convenience layer costs enum arithmetic per frame and an option read
(RCVMORE) per received frame, which is most of a frame's cost on the hot
paths; these go through the sockets' compiled calls with plain int flags.
"""

from __future__ import annotations

import zmq
import zmq.backend

NOBLOCK = int(zmq.NOBLOCK)
NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
POLLIN = int(zmq.POLLIN)
EVENTS = int(zmq.EVENTS)
send = zmq.backend.Socket.send
recv = zmq.backend.Socket.recv
get = zmq.backend.Socket.get


def send_parts(sock: zmq.Socket[bytes], parts: list[bytes]) -> None:
    """One message of `parts`, without blocking (PUB and XPUB drop at their HWM)."""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        send(sock, part, NOBLOCK_MORE if i < last else NOBLOCK)


def recv_parts(sock: zmq.Socket[bytes]) -> list[bytes]:
    """One whole message; raises zmq.Again when none is waiting."""
    # Frames, not getsockopt(RCVMORE): an option read costs more than the frame.
    frame = recv(sock, NOBLOCK, False)
    parts = [frame.bytes]
    while frame.more:
        frame = recv(sock, NOBLOCK, False)
        parts.append(frame.bytes)
    return parts
