"""The broker's sockets and its loop: everything edges publish, sequenced, forwarded.

Edges connect a PUB socket to the XSUB side and a SUB socket to the XPUB
side. The XSUB subscribes to everything, so publishers never filter
upstream: a message an edge sends is never dropped because a subscription
has not yet travelled to it. The XPUB side filters per subscriber by topic
(in libzmq). Between them one loop hands every message on a room's topic to
the sequencer (`broker.streams`), in the order they arrive, and forwards the
stamped chats; it also learns from XPUB which rooms have subscribers.

Both sockets bind to loopback by default. For edges on other hosts the
broker speaks CURVE (`--curve-secret-key`, `--curve-allowed`): traffic is
encrypted and only allowed client keys may connect at all (see chatconfig.curve).
"""

from __future__ import annotations

import logging
import select
import signal
import time
from types import FrameType

import zmq

from broker.streams import Limits, Sequencer
from chatconfig import BrokerSettings
from chatconfig.curve import (
    CurveKeyError,
    allowed_keys,
    apply_server,
    is_local_endpoint,
    load_keypair,
    start_authenticator,
)
from protocol.multipart import EVENTS, NOBLOCK, POLLIN, get, recv_parts, send_parts

log = logging.getLogger("broker")

SUBSCRIBE_ALL = b"\x01"
BATCH = 1024  # messages read per turn before subscriptions and housekeeping get theirs
EXPIRE_EVERY = 1.0  # seconds between retention sweeps
_FD = int(zmq.FD)
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
        history = settings.history
        sequencer = Sequencer(Limits(
            history.history_size, history.history_ttl, history.history_bytes,
            history.dedupe_window,
        ))
        forward(xsub, xpub, sequencer)
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


def forward(xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], sequencer: Sequencer) -> None:
    """Until a signal: sequence what arrives on XSUB, forward it on XPUB."""
    # One poll(2) on the sockets' notification FDs per wake-up. zmq_poll (and
    # zmq.Poller) costs three syscalls per pass and two passes per wake-up;
    # at a low rate, with one chat per wake-up, that was most of the
    # broker's own CPU. A notification FD only says "commands are waiting",
    # so each socket's ZMQ_EVENTS is read after the last use of that socket
    # and before sleeping: whatever arrives after that read wakes the poll.
    wait = select.poll()
    wait.register(int(get(xsub, _FD)), select.POLLIN)
    wait.register(int(get(xpub, _FD)), select.POLLIN)
    timeout = int(EXPIRE_EVERY * 1000)
    next_expiry = time.monotonic() + EXPIRE_EVERY
    while True:
        now = time.monotonic()
        more = False
        if int(get(xsub, EVENTS)) & POLLIN:
            more = _sequence(xsub, xpub, sequencer, now)
        if int(get(xpub, EVENTS)) & POLLIN:
            _subscriptions(xpub, sequencer)
        if now >= next_expiry:
            sequencer.expire(now)
            next_expiry = now + EXPIRE_EVERY
        if not more:
            wait.poll(timeout)


def _sequence(xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], sequencer: Sequencer,
              now: float) -> bool:
    """Sequence and forward up to BATCH messages; True if more may be waiting."""
    sequence = sequencer.sequence
    acks: dict[bytes, list[bytes]] = {}
    more = True
    try:
        for i in range(BATCH):
            # At a low rate a wake-up brings one message: asking whether
            # another waits (~3 us) is cheaper than the zmq.Again that ends
            # a read (~8 us).
            if i == 1 and not int(get(xsub, EVENTS)) & POLLIN:
                more = False
                break
            message = recv_parts(xsub)
            topic = message[0]
            out = sequence(topic, message[1:], now) if len(message) > 1 else None
            if out is None:
                send_parts(xpub, message)  # not a room's: an edge's probe, passed as it is
                continue
            if out.forward:
                send_parts(xpub, [topic, *out.forward])
            for origin, part in out.notes:
                if part[:1] == b"A":
                    # in any order: one message per edge
                    pending = acks.get(origin)
                    if pending is None:
                        acks[origin] = [part]
                    else:
                        pending.append(part)
                else:
                    send_parts(xpub, [origin, part])  # a reply: right after what it counts
    except zmq.Again:
        more = False
    for origin, parts in acks.items():
        send_parts(xpub, [origin, *parts])
    return more


def _subscriptions(xpub: zmq.Socket[bytes], sequencer: Sequencer) -> None:
    """XPUB reports a topic's first subscriber (1) and its last one leaving (0)."""
    for _ in range(BATCH):
        try:
            event = xpub.recv(NOBLOCK)
        except zmq.Again:
            return
        if event[:1] in (b"\x00", b"\x01"):
            sequencer.subscription(event[1:], event[0] == 1)
