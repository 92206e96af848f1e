"""`chat-bench broker`: how many chats one broker process sequences and forwards.

The broker runs alone (`python -m broker`, history on with its defaults),
pinned to one server core, with its durable store (`CHAT_DATA_DIR` in a
temporary directory, as deploy/supervisord.conf ships it: a chat is
forwarded only once the turn that sequenced it is committed, so chats/s
forwarded is chats/s stored) or in memory only (`--stores`; both by
default, one after the other). This process plays every edge at once from the
generator core: a PUB socket connected to the broker's XSUB endpoint sends
a room's burst as one ZeroMQ message, round-robin over the rooms, in either
framing the broker takes: `[topic, chat, chat, ...]` (a frame per chat,
"parts") or `[topic, chat\nchat\n...]` (one frame of newline-packed chats,
"packed", as edges publish since 54ca855), and a SUB socket on the
XPUB endpoint, subscribed to every room, takes the stamped chats back. At
most `window` messages are in flight, so no pipe reaches its high-water mark
(a PUB drops silently there): the rate is what the broker keeps up with.

Reported per store and batch size: chats/s forwarded, the broker's CPU per chat (all
its threads, from /proc), the driver's own CPU (if it nears 100 % of its
core the driver, not the broker, is the limit), and two checks: chats that
never came back (still in flight once nothing has come back for 10 s), and
offsets that did not follow on in a room; the longest pause with chats in
flight and none coming back; and, durable,
the store once its broker stopped (bytes on disk per 1,000 chats it held).
Each row gets a broker of its own (and a new store).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.backend

from bench.pinning import CpuPlan
from bench.procstat import cpu_seconds
from bench.servers import _clean_env, check_imports_from, free_port, resolve_ref, worktree
from bench.storesize import store_figures
from protocol.codec import encode_chat
from protocol.stream import CHAT_SEPARATOR, pack, read_stamp
from protocol.topics import room_topic

_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get
WARMUP = 1.0
START_TIMEOUT = 20.0
# After the measured seconds, what is still in flight counts as lost once
# nothing has come back for this long: a durable broker can pause for a
# second or more (see BatchResult.longest_pause_ms) without losing anything.
DRAIN_QUIET = 10.0


@dataclass(frozen=True, slots=True)
class BrokerParams:
    batches: tuple[int, ...] = (1, 10, 50)
    framings: tuple[str, ...] = ("parts", "packed")
    stores: tuple[str, ...] = ("durable", "memory")
    rooms: int = 100
    size: int = 128  # message characters
    duration: float = 5.0  # measured seconds per batch size, after a warm-up
    warmup: float = WARMUP  # seconds of load before the measured ones, per row
    window: int = 2000  # messages in flight
    at: str | None = None  # a git ref: the broker as committed there (None: this checkout)


FRAMINGS = ("parts", "packed")
STORES = ("durable", "memory")


def room_messages(rooms: int, batch: int, size: int, framing: str = "parts",
                  ) -> list[list[bytes]]:
    """One message per room of `batch` chats, each chat as an edge encodes it.

    "parts": `[topic, chat, chat, ...]`; "packed": `[topic, chat\nchat...]`.
    """
    text = "x" * size
    messages = []
    for n in range(rooms):
        room = f"bench-{n}"
        chats = [encode_chat(room, text, f"m{n}-{i}", "c-bench", 1_700_000_000_000)
                 for i in range(batch)]
        body = chats if framing == "parts" else [pack(chats)]
        messages.append([room_topic(room), *body])
    return messages


class Continuity:
    """Per room: the last offset seen; counts messages whose offsets do not follow on.

    Only a message's last chat is read (a message's chats are stamped in a
    row by the broker), which keeps the check cheap enough for the driver.
    """

    __slots__ = ("breaks", "chats", "last")

    def __init__(self) -> None:
        self.last: dict[bytes, int] = {}
        self.chats = 0
        self.breaks = 0

    def message(self, parts: Sequence[bytes]) -> None:
        count = len(parts) - 1
        if count == 1:
            count = parts[1].count(CHAT_SEPARATOR) + 1  # packed
        self.chats += count
        stamp = read_stamp(parts[-1])
        if stamp is None:
            self.breaks += 1
            return
        offset = stamp[1]
        before = self.last.get(parts[0])
        if before is not None and offset != before + count:
            self.breaks += 1
        self.last[parts[0]] = offset


@dataclass(slots=True)
class BatchResult:
    store: str
    framing: str
    batch: int
    chats: int
    seconds: float
    chats_per_s: float
    messages_per_s: float
    broker_cpu_s: float
    broker_cpu_pct: float
    broker_us_per_chat: float
    driver_cpu_pct: float
    lost: int
    offset_breaks: int
    # The longest wait, from the warm-up on, with chats in flight and none coming back.
    longest_pause_ms: float = 0.0
    # durable: the store once its broker stopped (bench.storesize.store_figures)
    store_figures: dict[str, Any] | None = None


@contextlib.contextmanager
def broker_process(cpus: CpuPlan, logs: Path, at: str | None = None,
                   data_dir: Path | None = None,
                   ) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """A broker with default history on free ports, on the first server core only.

    `at`: run the broker as committed at that git ref, from a temporary
    worktree (as `ours@REF` does), so edits under way elsewhere do not count.
    `data_dir`: its durable store (None: memory only).
    """
    with contextlib.ExitStack() as stack:
        cwd = None
        if at is not None:
            cwd = stack.enter_context(worktree(at))
            check_imports_from(cwd)
        yield stack.enter_context(_broker(cpus, logs, cwd, data_dir))


@contextlib.contextmanager
def _broker(cpus: CpuPlan, logs: Path, cwd: Path | None, data_dir: Path | None,
            ) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    pub, sub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    settings = {"CHAT_BROKER_PUB": pub, "CHAT_BROKER_SUB": sub, "CHAT_LOG_LEVEL": "WARNING"}
    if data_dir is not None:
        settings["CHAT_DATA_DIR"] = str(data_dir)
    env = _clean_env(settings)
    prefix = ["taskset", "-c", str(cpus.servers[0])] if cpus.pinned else []
    logs.mkdir(parents=True, exist_ok=True)
    name = "broker-durable.log" if data_dir is not None else "broker.log"
    with (logs / name).open("ab") as err:  # a broker per row: one log
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "broker"], env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield proc, pub, sub
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _recv_parts(sock: zmq.Socket[bytes]) -> list[bytes]:
    parts = [_recv(sock, _NOBLOCK)]
    while _get(sock, _RCVMORE):
        parts.append(_recv(sock, _NOBLOCK))
    return parts


def _send_parts(sock: zmq.Socket[bytes], parts: list[bytes]) -> None:
    last = len(parts) - 1
    for i, part in enumerate(parts):
        _send(sock, part, _MORE if i < last else _NOBLOCK)


def _cpu() -> float:
    return time.process_time()


class Driver:
    """The edges' side of one broker: sends batches, takes the stamped chats back."""

    def __init__(self, pub_endpoint: str, sub_endpoint: str, rooms: int) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.sub = self.ctx.socket(zmq.SUB)
        for sock in (self.pub, self.sub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
        self.pub.connect(pub_endpoint)
        self.sub.connect(sub_endpoint)
        for n in range(rooms):
            self.sub.setsockopt(zmq.SUBSCRIBE, room_topic(f"bench-{n}"))
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)

    def close(self) -> None:
        self.pub.close(0)
        self.sub.close(0)
        self.ctx.term()

    def wait_live(self, probe: list[bytes], timeout: float = START_TIMEOUT) -> None:
        """Send until something comes back: both connections and the subscription are up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _send_parts(self.pub, probe)
            if self.poller.poll(100):
                while True:
                    try:
                        _recv_parts(self.sub)
                    except zmq.Again:
                        break
                # Let the rest of the probes drain.
                while self.poller.poll(300):
                    with contextlib.suppress(zmq.Again):
                        while True:
                            _recv_parts(self.sub)
                return
        raise TimeoutError(f"nothing came back through the broker in {timeout:.0f} s")

    def run(self, store: str, messages: list[list[bytes]], framing: str, batch: int,
            window: int, warmup: float, duration: float, broker_pid: int) -> BatchResult:
        check = Continuity()
        sent = 0
        received = 0
        inflight = 0
        started = time.monotonic()
        measure_at = started + warmup
        end_at = measure_at + duration
        base: tuple[float, int, float, float] | None = None
        count = len(messages)
        pub, sub, poll = self.pub, self.sub, self.poller.poll
        last_back = measure_at
        longest = 0.0
        while True:
            now = time.monotonic()
            if base is None and now >= measure_at:
                base = (now, check.chats, cpu_seconds(broker_pid), _cpu())
            if now >= end_at:
                break
            while inflight < window:
                _send_parts(pub, messages[sent % count])
                sent += 1
                inflight += 1
            if not poll(100):
                longest = max(longest, time.monotonic() - last_back)
                continue
            last_back = max(time.monotonic(), measure_at)
            for _ in range(window):
                try:
                    parts = _recv_parts(sub)
                except zmq.Again:
                    break
                check.message(parts)
                received += 1
                inflight -= 1
        assert base is not None
        t1, chats1, broker1, driver1 = now, check.chats, cpu_seconds(broker_pid), _cpu()
        t0, chats0, broker0, driver0 = base
        # Drain what is still in flight, to count what never came back.
        while inflight and poll(int(DRAIN_QUIET * 1000)):
            with contextlib.suppress(zmq.Again):
                while True:
                    check.message(_recv_parts(sub))
                    received += 1
                    inflight -= 1
        seconds = t1 - t0
        chats = chats1 - chats0
        broker_cpu = broker1 - broker0
        return BatchResult(
            store=store, framing=framing, batch=batch, chats=chats, seconds=round(seconds, 3),
            chats_per_s=round(chats / seconds, 1),
            messages_per_s=round(chats / batch / seconds, 1),
            broker_cpu_s=round(broker_cpu, 3),
            broker_cpu_pct=round(100 * broker_cpu / seconds, 1),
            broker_us_per_chat=round(1e6 * broker_cpu / chats, 3) if chats else 0.0,
            driver_cpu_pct=round(100 * (driver1 - driver0) / seconds, 1),
            lost=(sent - received) * batch, offset_breaks=check.breaks,
            longest_pause_ms=round(1000 * longest, 1),
        )


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run(params: BrokerParams, cpus: CpuPlan, logs: Path) -> dict[str, Any]:
    results: list[BatchResult] = []
    loads = [load_average()]
    commit = resolve_ref(params.at)[:7] if params.at is not None else None
    rows = [(framing, batch) for framing in params.framings for batch in params.batches
            # packed 1 is the same bytes as one chat in parts
            if not (framing == "packed" and batch == 1 and "parts" in params.framings)]
    for store in params.stores:
        for framing, batch in rows:
            # A broker (and store) per row: chat rows one row's turns wrote are not
            # released during the next row's, whose rows may hold more chats each.
            results.append(_one(params, store, framing, batch, cpus, logs))
            loads.append(load_average())
    return {"params": asdict(params), "broker_commit": commit, "cpus": cpus.to_json(),
            "load_average": loads, "results": [asdict(r) for r in results]}


def _one(params: BrokerParams, store: str, framing: str, batch: int, cpus: CpuPlan,
         logs: Path) -> BatchResult:
    data_dir = Path(tempfile.mkdtemp(prefix="chat-bench-store-")) if store == "durable" \
        else None
    try:
        with broker_process(cpus, logs, params.at, data_dir) as (proc, pub, sub):
            result = _drive(params, store, framing, batch, cpus, proc, pub, sub)
        if data_dir is not None:
            result.store_figures = store_figures(data_dir)
    finally:
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _drive(params: BrokerParams, store: str, framing: str, batch: int, cpus: CpuPlan,
           proc: subprocess.Popen[bytes], pub: str, sub: str) -> BatchResult:
    before = os.sched_getaffinity(0)
    if cpus.pinned:
        os.sched_setaffinity(0, cpus.loadgen)
    driver = Driver(pub, sub, params.rooms)
    try:
        driver.wait_live(room_messages(1, 1, params.size)[0])
        if proc.poll() is not None:
            raise RuntimeError(f"the broker exited with {proc.returncode}")
        messages = room_messages(params.rooms, batch, params.size, framing)
        window = max(1, min(params.window, params.window * 10 // batch))
        return driver.run(store, messages, framing, batch, window, params.warmup, params.duration,
                          proc.pid)
    finally:
        driver.close()
        os.sched_setaffinity(0, before)


def markdown(session: dict[str, Any]) -> str:
    lines = [
        "| store | framing | chats per message | chats/s | messages/s | broker CPU % of its "
        "core | broker CPU µs/chat | driver CPU % | lost | offset breaks | longest pause ms "
        "| store on disk per 1,000 chats held |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in session["results"]:
        figures = r.get("store_figures")
        per = figures["bytes_per_1000_chats"] if figures else None
        lines.append(
            f"| {r['store']} | {r['framing']} | {r['batch']} | {r['chats_per_s']:,.0f} "
            f"| {r['messages_per_s']:,.0f} "
            f"| {r['broker_cpu_pct']:.0f} | {r['broker_us_per_chat']:.2f} "
            f"| {r['driver_cpu_pct']:.0f}{' ⚠' if r['driver_cpu_pct'] >= 90 else ''} "
            f"| {r['lost']:,} | {r['offset_breaks']} | {r.get('longest_pause_ms', 0):,.0f} "
            f"| {f'{per / 1024:,.0f} KiB' if per else '–'} |"
        )
    return "\n".join(lines)
