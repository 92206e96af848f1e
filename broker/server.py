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

import asyncio
import logging
import os
import select
import signal
import time
from types import FrameType

import msgspec
import zmq

from broker import metrics
from broker.presence import PresenceLimits, PresenceOwner, messages
from broker.sharding import ShardGuard
from broker.store import Store, StoreFailed, open_store
from broker.streams import Limits, Sequencer
from broker.zmtphub import XPUB, XSUB, ZmtpHub, speaks_for
from chatconfig import BrokerSettings, History, PresenceRules
from chatconfig.curve import (
    CurveKeyError,
    allowed_keys,
    apply_server,
    is_local_endpoint,
    load_keypair,
    start_authenticator,
)
from chatconfig.eventloop import new_event_loop
from protocol.multipart import EVENTS, NOBLOCK, POLLIN, get, recv_parts, send_parts
from protocol.presence import EVENT_MARK, HEARTBEAT_TOPIC, LISTING_MARK, PRESENCE_MARKS
from protocol.stream import CHAT_SEPARATOR, MSGID_MARK, AckNote, ack_part, read_keyed
from protocol.topics import room_of_topic

log = logging.getLogger("broker")

SUBSCRIBE_ALL = b"\x01"
BATCH = 1024  # messages read per turn before subscriptions and housekeeping get theirs
EXPIRE_EVERY = 1.0  # seconds between retention sweeps
# After a start from a store, rooms nobody subscribes to are kept this long
# (seconds): edges subscribe again within a probe interval or two, and a room
# forgotten before that would come back with a new epoch.
KEEP_IDLE_AFTER_START = 30.0
_FD = int(zmq.FD)
# ZMTP heartbeats find a dead peer (an edge host that vanished) within seconds.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class Shutdown(BaseException):
    """Raised from a signal handler to leave the loop. A BaseException: raised
    inside a log call, an Exception would be caught and printed by logging,
    and the broker would go on running."""


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


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    """Bind, first making an ipc:// socket's directory (0700: this user's processes only)."""
    transport, _, path = endpoint.partition("://")
    try:
        if transport == "ipc" and not path.startswith("@"):  # "@": Linux's abstract namespace
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        sock.bind(endpoint)
    except (zmq.ZMQError, OSError) as exc:
        raise SystemExit(f"chat-broker: cannot bind {endpoint}: {exc}") from None


def _open(history: History, rules: PresenceRules) -> Keeper:
    limits = Limits(history.history_size, history.history_ttl, history.history_bytes,
                    history.dedupe_window)
    presence = PresenceOwner(PresenceLimits.from_rules(rules), time.time())
    if not history.data_dir:
        log.warning("no --data-dir: history is in memory only, and a restart changes every "
                    "room's epoch")
        return Keeper(Sequencer(limits), None, presence)
    store, sequencer = open_store(history.data_dir, limits, time.time())
    return Keeper(sequencer, store, presence)


def run(settings: BrokerSettings) -> None:
    _warn_plain_text(settings)
    endpoints = settings.endpoints
    keeper = _open(settings.history, settings.presence)
    guard = ShardGuard(settings.shard_index, settings.shard_count)
    try:
        if speaks_for(settings.curve.curve_secret_key, endpoints.broker_pub,
                      endpoints.broker_sub):
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(_serve(settings, keeper, guard))
        else:
            _run_libzmq(settings, keeper, guard)
    finally:
        if keeper.store is not None:
            keeper.store.close()


def _ready(settings: BrokerSettings, keeper: Keeper, guard: ShardGuard,
           hub: ZmtpHub | None, transport: str) -> None:
    """Metrics, once both sides are bound, and the line that says the broker is up."""
    if settings.metrics_port:
        try:
            metrics.serve(metrics.BrokerCollector(keeper, guard, settings.shard, hub),
                          settings.metrics_host, settings.metrics_port)
        except OSError as exc:  # chats matter more than their metrics: carry on
            log.error("no /metrics on %s:%d: %s", settings.metrics_host,
                      settings.metrics_port, exc.strerror or exc)
    endpoints = settings.endpoints
    log.info(
        "broker ready: shard %s, publishers -> %s, subscribers <- %s, hwm=%d (%s)",
        settings.shard, endpoints.broker_pub, endpoints.broker_sub, endpoints.hwm, transport,
    )


async def _serve(settings: BrokerSettings, keeper: Keeper, guard: ShardGuard) -> None:
    """Until a signal: the broker's loop with its sockets spoken in ZMTP (`broker.zmtphub`).

    What publishers send in one turn of the event loop is one pass: taken as
    it is read, committed and forwarded once the loop has read everything
    ready, so a burst costs one commit and one write per subscriber.
    """
    loop = asyncio.get_running_loop()
    endpoints = settings.endpoints
    turn = Turn(keeper, guard)
    stopped: asyncio.Future[str] = loop.create_future()
    finishing = False

    def fail(exc: BaseException) -> None:
        # A bug in the turn ends the broker, as it did on libzmq's sockets:
        # its supervisor starts it again from its store.
        if not stopped.done():
            stopped.set_exception(exc)

    def finish() -> None:
        nonlocal finishing
        finishing = False
        try:
            hub.send(turn.finish(time.time()))
        except Exception as exc:
            fail(exc)
            return
        if keeper.releasing:
            schedule()  # released rows still to delete: another commit soon

    def schedule() -> None:
        nonlocal finishing
        if not finishing:
            finishing = True
            loop.call_soon(finish)

    def take(messages: list[list[bytes]]) -> None:
        # Wall-clock time: history's ages are kept in the store across restarts.
        now = time.time()
        try:
            for message in messages:
                turn.take(message, now)
        except Exception as exc:
            fail(exc)
        if turn.taken >= BATCH:
            # The loop may read many times before its turn ends (libuv reads a
            # ready socket up to 32 times): a pass this big is finished now, so
            # that what it forwards flows out while more comes in.
            finish()
        else:
            schedule()

    def subscription(topic: bytes, subscribed: bool) -> None:
        keeper.sequencer.subscription(topic, subscribed)

    keep_idle_until = loop.time() + KEEP_IDLE_AFTER_START
    housekeeping: asyncio.TimerHandle | None = None

    def keep_house() -> None:
        nonlocal housekeeping
        if housekeeping is not None:
            try:
                turn.keep_house(time.time(), loop.time() >= keep_idle_until)
            except Exception as exc:
                fail(exc)
                return
            schedule()
        housekeeping = loop.call_later(EXPIRE_EVERY, keep_house)

    hub = ZmtpHub(endpoints.hwm, take, subscription)
    keep_house()
    try:
        for endpoint, side in ((endpoints.broker_pub, XSUB), (endpoints.broker_sub, XPUB)):
            try:
                await hub.listen(endpoint, side)
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                raise SystemExit(f"chat-broker: cannot bind {endpoint}: {why}") from None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop_on, stopped, sig.name)
        _ready(settings, keeper, guard, hub, "ZMTP on the event loop")
        log.info("broker stopping on %s", await stopped)
    finally:
        if housekeeping is not None:
            housekeeping.cancel()
        hub.close()


def _stop_on(stopped: asyncio.Future[str], signal_name: str) -> None:
    if not stopped.done():
        stopped.set_result(signal_name)


def _run_libzmq(settings: BrokerSettings, keeper: Keeper, guard: ShardGuard) -> None:
    """Until a signal: the broker's loop on libzmq's sockets (CURVE, or what only libzmq binds)."""
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
        _bind(xsub, endpoints.broker_pub)
        _bind(xpub, endpoints.broker_sub)
        xsub.send(SUBSCRIBE_ALL)
        _ready(settings, keeper, guard, None, "libzmq")
        forward(xsub, xpub, keeper, guard)
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


class Keeper:
    """The sequencer and, when durable, its store, kept in step.

    A turn's changes are committed (to the store's commit log) before
    anything of that turn is sent. A commit that fails (no space for a new
    segment of the log) leaves the store as it was: the streams are read
    back from it, the turn's chats are refused (their senders get
    `unavailable` through their edge), and so are later chats until a write
    goes through again. When the store's thread cannot write the log to the
    file (the disk is full, say), the chats of the turns after are refused
    the same way. Probes and history queries are still answered meanwhile.
    """

    def __init__(self, sequencer: Sequencer, store: Store | None,
                 presence: PresenceOwner) -> None:
        self.sequencer = sequencer
        self.store = store
        self.presence = presence  # not stored: edges' heartbeats rebuild it after a start
        self.refusing = False
        self.refused = 0  # chats refused since start: nothing of them was stored or sent
        self.releasing = False  # released chat rows still to delete
        # The sequencer's counters as of the last turn stored: a turn that fails
        # to commit is counted as refused, not as sequenced.
        self._counted = (0, 0, 0, 0)

    def commit(self, turn: list[list[bytes]], outbox: list[list[bytes]], now: float) -> None:
        """Make the turn's changes durable; on failure, replace `outbox` with refusals."""
        store = self.store
        if store is None or self.refusing or self.sequencer.journal is None:
            return
        try:
            self.releasing = store.commit(self.sequencer.journal)
            seq = self.sequencer
            self._counted = (seq.sequenced, seq.duplicates, seq.malformed, seq.shortened_windows)
            if store.failing is not None:
                # This turn is in the commit log, but the file cannot take the
                # log: refuse from the next turn on, before the log fills too.
                log.error(
                    "store write failed (%s): chats are refused with unavailable until it "
                    "works again", store.failing,
                )
                self.refusing = True
        except StoreFailed as exc:
            log.error(
                "store write failed (%s): chats are refused with unavailable until it works "
                "again", exc,
            )
            self._reload(store, now)
            self.refusing = True
            # Presence events and listings stand (presence is not stored);
            # nothing sequenced in the turn leaves.
            outbox[:] = [m for m in outbox if len(m) > 1 and m[1][:1] in (EVENT_MARK, LISTING_MARK)]
            for message in turn:
                self.refuse(message, outbox, now, again=True)

    def _reload(self, store: Store, now: float) -> None:
        old = self.sequencer
        subscribed = [s.topic for s in old.streams() if s.subscribed]
        fresh = store.load(old.limits, now)
        # Counters since start go on from the last turn stored (metrics would
        # read a drop as a restart); set before a scrape can see `fresh`.
        (fresh.sequenced, fresh.duplicates, fresh.malformed,
         fresh.shortened_windows) = self._counted
        for topic in subscribed:
            fresh.subscription(topic, True)
        fresh.drop_idle()
        self.sequencer = fresh

    def retry(self) -> None:
        """While refusing: resume once the store takes a write again."""
        if self.store is not None and self.refusing and self.store.writable():
            self.refusing = False
            log.warning("store writable again: chats accepted (%d refused meanwhile)",
                        self.refused)

    def refuse(self, message: list[bytes], outbox: list[list[bytes]], now: float,
               again: bool = False) -> None:
        """Sequence a message's probes and queries, and refuse its chats.

        `again`: the message's presence parts were handled already.
        """
        topic, kept = message[0], [message[0]]
        if topic == HEARTBEAT_TOPIC:
            if not again:
                _route(topic, message, self, outbox, None, now)
            return
        stream = self.sequencer.stream(topic)
        for part in message[1:]:
            kind = part[:1]
            if again and kind in PRESENCE_MARKS:
                continue
            if kind == b"{":
                self.refused += part.count(CHAT_SEPARATOR) + 1
            elif kind == MSGID_MARK and stream is not None:
                self.refused += 1
                try:
                    keyed = read_keyed(part)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                note = AckNote(stream.room_id, keyed.key, stream.epoch, 0, False, refused=True)
                outbox.append([keyed.origin, ack_part(note)])
            else:
                kept.append(part)
        if len(kept) > 1:
            _route(message[0], kept, self, outbox, None, now)


class Turn:
    """One pass of the loop: the messages read, and what they make to send.

    `take` each message as it is read; `finish` commits the pass (when the
    broker is durable) and hands back what to send, in order. Whatever
    carries the messages (libzmq's sockets or `broker.zmtphub`) drives it.
    """

    def __init__(self, keeper: Keeper, guard: ShardGuard | None = None) -> None:
        self.keeper = keeper
        self.guard = guard
        self.outbox: list[list[bytes]] = []
        self._taken: list[list[bytes]] = []  # for the store's commit, when durable
        self._acks: dict[bytes, list[bytes]] = {}  # acks due, per edge
        self.taken = 0  # messages taken since the last finish

    def take(self, message: list[bytes], now: float) -> None:
        keeper, guard, outbox = self.keeper, self.guard, self.outbox
        self.taken += 1
        if guard is not None:
            notes = guard.refused(message)
            if notes is not None:
                _refused(guard, message[0], notes)
                outbox.extend(notes)
                return
        if keeper.refusing:
            keeper.refuse(message, outbox, now)
            return
        if keeper.store is not None:
            self._taken.append(message)
        _route(message[0], message, keeper, outbox, self._acks, now)

    def keep_house(self, now: float, drop_idle: bool) -> None:
        """Every EXPIRE_EVERY: retention, presence timeouts, idle rooms, a failed store."""
        keeper = self.keeper
        keeper.sequencer.expire(now)
        self.outbox.extend(messages(keeper.presence.expire(now)))
        if drop_idle and keeper.sequencer.keep_idle:
            keeper.sequencer.drop_idle()
        keeper.retry()

    def finish(self, now: float) -> list[list[bytes]]:
        """Commit the pass; what to send, in order (acks last: one message per edge)."""
        outbox = self.outbox
        if self._acks:
            for origin, parts in self._acks.items():
                outbox.append([origin, *parts])
            self._acks = {}
        self.keeper.commit(self._taken, outbox, now)
        self._taken.clear()
        self.outbox = []
        self.taken = 0
        return outbox


def forward(xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], keeper: Keeper,
            guard: ShardGuard | None = None) -> None:
    """Until a signal: sequence what arrives on XSUB, store it, forward it on XPUB."""
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
    keep_idle_until = time.monotonic() + KEEP_IDLE_AFTER_START
    turn = Turn(keeper, guard)
    while True:
        # Wall-clock time: history's ages are kept in the store across restarts.
        now = time.time()
        more = False
        if int(get(xsub, EVENTS)) & POLLIN:
            more = _read(xsub, turn, now)
        if int(get(xpub, EVENTS)) & POLLIN:
            _subscriptions(xpub, keeper)
        clock = time.monotonic()
        if clock >= next_expiry:
            turn.keep_house(now, clock >= keep_idle_until)
            next_expiry = clock + EXPIRE_EVERY
        for message in turn.finish(now):
            send_parts(xpub, message)
        if not more:
            wait.poll(0 if keeper.releasing else timeout)


def _read(xsub: zmq.Socket[bytes], turn: Turn, now: float) -> bool:
    """Take up to BATCH messages into the turn; True if more may be waiting."""
    try:
        for i in range(BATCH):
            # At a low rate a wake-up brings one message: asking whether
            # another waits (~3 us) is cheaper than the zmq.Again that ends
            # a read (~8 us).
            if i == 1 and not int(get(xsub, EVENTS)) & POLLIN:
                return False
            turn.take(recv_parts(xsub), now)
    except zmq.Again:
        return False
    return True


def _refused(guard: ShardGuard, topic: bytes, notes: list[list[bytes]]) -> None:
    # Logged at the first refusal and then every 1,000th: a misconfigured
    # edge keeps probing.
    refused = guard.refused_rooms + guard.refused_probes
    if refused % 1000 == 1 and notes:
        log.warning("refused (%d so far): %s", refused, notes[0][1][1:].decode(errors="replace"))


def _route(topic: bytes, message: list[bytes], keeper: Keeper,
           outbox: list[list[bytes]], acks: dict[bytes, list[bytes]] | None,
           now: float) -> None:
    """One message through the sequencer and the presence owner, in the order of its
    parts: what to forward, and the notes due."""
    parts = message[1:]
    if topic == HEARTBEAT_TOPIC:
        for part in parts:
            outbox.extend(keeper.presence.handle_heartbeat(part, now))
        return
    if not any(part[:1] in PRESENCE_MARKS for part in parts):
        _sequence_parts(topic, message, parts, keeper.sequencer, outbox, acks, now)
        return
    room_id = room_of_topic(topic)
    run: list[bytes] = []
    for part in parts:
        if part[:1] not in PRESENCE_MARKS:
            run.append(part)
            continue
        if run:
            _sequence_parts(topic, [topic, *run], run, keeper.sequencer, outbox, acks, now)
            run = []
        if room_id is None:
            continue  # presence is a room's
        out = keeper.presence.handle(room_id, part, now)
        if out.forward:
            outbox.append([topic, *out.forward])
        outbox.extend([note_topic, note] for note_topic, note in out.notes)
    if run:
        _sequence_parts(topic, [topic, *run], run, keeper.sequencer, outbox, acks, now)


def _sequence_parts(topic: bytes, message: list[bytes], parts: list[bytes],
                    sequencer: Sequencer, outbox: list[list[bytes]],
                    acks: dict[bytes, list[bytes]] | None, now: float) -> None:
    out = sequencer.sequence(topic, parts, now) if parts else None
    if out is None:
        outbox.append(message)  # not a room's: an edge's probe, passed as it is
        return
    if out.forward:
        outbox.append([topic, *out.forward])
    for origin, part in out.notes:
        if part[:1] == b"A" and acks is not None:
            # in any order: one message per edge
            pending = acks.get(origin)
            if pending is None:
                acks[origin] = [part]
            else:
                pending.append(part)
        else:
            outbox.append([origin, part])  # a reply: right after what it counts


def _subscriptions(xpub: zmq.Socket[bytes], keeper: Keeper) -> None:
    """XPUB reports a topic's first subscriber (1) and its last one leaving (0)."""
    for _ in range(BATCH):
        try:
            event = xpub.recv(NOBLOCK)
        except zmq.Again:
            return
        if event[:1] in (b"\x00", b"\x01"):
            keeper.sequencer.subscription(event[1:], event[0] == 1)
