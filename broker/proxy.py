"""Bind the broker's two sockets and run the forwarding loop inside libzmq.

Edges connect a PUB socket to the XSUB side and a SUB socket to the XPUB
side. The XSUB subscribes to everything, so publishers never filter
upstream: a message an edge sends is never dropped because a subscription
has not yet travelled to it. The XPUB side filters per subscriber by topic.

Both sockets bind to loopback by default. For edges on other hosts the
broker speaks CURVE (`--curve-secret-key`, `--curve-allowed`): traffic is
encrypted and only allowed client keys may connect at all (see chatconfig.curve).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import zmq

from chatconfig import BrokerSettings
from chatconfig.curve import (
    CurveKeyError,
    allowed_keys,
    apply_server,
    is_local_endpoint,
    load_keypair,
    start_authenticator,
)

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


def _warn_plain_text(settings: BrokerSettings) -> None:
    """Warn about plain text off-host (a half-configured CURVE never gets here:
    chatconfig.CurveServer refuses it)."""
    if settings.curve.curve_secret_key:
        return
    endpoints = settings.endpoints
    for endpoint in (endpoints.broker_pub, endpoints.broker_sub):
        if not is_local_endpoint(endpoint):
            log.warning(
                "%s is reachable from other hosts without CURVE: anyone who can connect "
                "can publish and subscribe (see --curve-secret-key)", endpoint,
            )


def run(settings: BrokerSettings) -> None:
    _warn_plain_text(settings)
    endpoints, curve = settings.endpoints, settings.curve
    ctx = zmq.Context()
    auth = None
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        configure(xsub, endpoints.hwm)
        configure(xpub, endpoints.hwm)
        if curve.curve_secret_key:
            try:
                keys = load_keypair(curve.curve_secret_key)
                allowed = allowed_keys(curve.curve_allowed)
                # ZAP must be answering before a CURVE socket binds.
                auth = start_authenticator(ctx, curve.curve_allowed)
            except CurveKeyError as exc:
                raise SystemExit(f"chat-broker: {exc}") from None
            apply_server(xsub, keys)
            apply_server(xpub, keys)
            log.info("CURVE on: %d allowed client key(s) in %s", allowed, curve.curve_allowed)
        xsub.bind(endpoints.broker_pub)
        xpub.bind(endpoints.broker_sub)
        xsub.send(SUBSCRIBE_ALL)
        log.info(
            "broker ready: publishers -> %s, subscribers <- %s, hwm=%d",
            endpoints.broker_pub, endpoints.broker_sub, endpoints.hwm,
        )
        zmq.proxy(xsub, xpub)
    except Shutdown as exc:
        log.info("broker stopping on %s", exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        xsub.close(linger=0)
        xpub.close(linger=0)
        if auth is not None:
            auth.stop()
        ctx.term()
