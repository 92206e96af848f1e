"""Bind the broker's two sockets and run the forwarding loop inside libzmq.

Edges connect a PUB socket to the XSUB side and a SUB socket to the XPUB
side. The XSUB subscribes to everything, so publishers never filter
upstream: a message an edge sends is never dropped because a subscription
has not yet travelled to it. The XPUB side filters per subscriber by topic.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import zmq

from chatconfig import BrokerSettings

log = logging.getLogger("broker")

SUBSCRIBE_ALL = b"\x01"
# ZMTP heartbeats find a dead peer (an edge host that vanished) within seconds.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class Shutdown(Exception):
    """Raised from a signal handler to leave the libzmq proxy loop."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Shutdown(signal.Signals(signum).name)


def configure(sock: zmq.Socket[bytes], hwm: int) -> None:
    # Both directions matter: data flows one way and subscriptions the other,
    # and ZeroMQ drops silently at a pipe's high-water mark.
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)


def run(settings: BrokerSettings) -> None:
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        configure(xsub, settings.hwm)
        configure(xpub, settings.hwm)
        xsub.bind(settings.broker_pub)
        xpub.bind(settings.broker_sub)
        xsub.send(SUBSCRIBE_ALL)
        log.info(
            "broker ready: publishers -> %s, subscribers <- %s, hwm=%d",
            settings.broker_pub, settings.broker_sub, settings.hwm,
        )
        zmq.proxy(xsub, xpub)
    except Shutdown as exc:
        log.info("broker stopping on %s", exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        xsub.close(linger=0)
        xpub.close(linger=0)
        ctx.term()
