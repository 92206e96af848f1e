"""`chat-bench`: run workloads against roomcast and the reference servers.

    chat-bench all                       every workload, every server
    chat-bench fanout --servers ours,node
    chat-bench scale --servers ours,ours@HEAD~5   this commit beside an earlier one
    chat-bench fanout --servers ours,ours-memory  the durable store (as shipped) beside
                                         history in memory only
    chat-bench fanout --servers ours,ours/3  one edge per server core (the default)
                                         beside three edges on the same cores
    chat-bench latency | sweep | churn | scale
    chat-bench churn --presence          every client its own user, every join with
                                         presence (ours only: the references have none)
    chat-bench smoke                     ~2 s fan-out against ours; non-zero exit on
                                         loss, order violations or cross-room leaks
    chat-bench recovery                  members cut and rejoined on another edge with
                                         `since`; non-zero exit on a missed or duplicated chat
    chat-bench broker                    one broker process on one core: chats/s and CPU
                                         per chat, 1, 10 and 50 chats per ZeroMQ message,
                                         with its durable store and in memory only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import brokerload, machine, recovery, report
from bench.pinning import machine_plan
from bench.plot import plot_sweeps
from bench.procstat import raise_fd_limit
from bench.progress import Progress
from bench.servers import (
    NAMES,
    OURS,
    OURS_MEMORY,
    SERVERS,
    Unavailable,
    parse_name,
    resolve_ref,
    running,
)
from bench.suite import Bench, Params

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
WORKLOADS = ("fanout", "latency", "sweep", "churn", "scale")
COMMANDS: dict[str, tuple[str, ...]] = {
    "all": WORKLOADS,
    "smoke": ("fanout",),
    **{w: (w,) for w in WORKLOADS},
}
HELP = {
    "all": "every workload against every server (about 5 minutes)",
    "smoke": "a short fan-out run against ours; exits 1 on loss, misorder or leaks",
    "fanout": "R rooms x M members, S senders per room, closed loop with a window",
    "latency": "open loop at a fixed total rate; reports p50..max",
    "sweep": "open loop at rising rates; finds where p99 bends and plots it",
    "churn": "connect, join, chat, leave, disconnect in a loop",
    "scale": "N idle joined connections; connect rate and server RSS per connection",
}
SMOKE_DURATION = 2.0


def _servers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        try:
            _, ref = parse_name(name)
            if ref is not None:
                resolve_ref(ref)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _framings(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    wrong = [n for n in names if n not in brokerload.FRAMINGS]
    if wrong or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(brokerload.FRAMINGS)}")
    return names


def _stores(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    wrong = [n for n in names if n not in brokerload.STORES]
    if wrong or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(brokerload.STORES)}")
    return names


def _extra_commands(sub: Any, out: argparse.ArgumentParser) -> None:
    """`recovery` and `broker`: ours only, their own knobs."""
    r = recovery.RecoveryParams()
    rec = sub.add_parser("recovery", parents=[out], help="members cut mid-stream (abruptly "
                         "and by close) rejoin on another edge with `since`; exits 1 on a "
                         "missed or duplicated chat")
    rec.add_argument("--rooms", type=int, default=r.rooms)
    rec.add_argument("--members", type=int, default=r.members, help="per room")
    rec.add_argument("--rate", type=float, default=r.rate, help="chats/s per room")
    rec.add_argument("--duration", type=float, default=r.duration)
    rec.add_argument("--cuts", type=int, default=r.cuts, help="per member")
    rec.add_argument("--gap", type=float, default=r.gap,
                     help="seconds a cut member stays away")
    rec.add_argument("--size", type=int, default=r.size, help="message length in chars")
    b = brokerload.BrokerParams()
    brk = sub.add_parser("broker", parents=[out], help="one broker process on one core, "
                         "driven over ZeroMQ: chats/s and broker CPU per chat")
    brk.add_argument("--batches", type=_ints, default=b.batches,
                     help="comma-separated chats per ZeroMQ message")
    brk.add_argument("--framing", type=_framings, default=b.framings,
                     help="comma-separated: parts (a ZeroMQ frame per chat), packed (one "
                     "frame of newline-joined chats, as edges send them); default both")
    brk.add_argument("--stores", type=_stores, default=b.stores,
                     help="comma-separated: durable (the broker's store in a temporary "
                     "--data-dir, as shipped), memory (history in memory only); default both, "
                     "one broker after the other")
    brk.add_argument("--rooms", type=int, default=b.rooms)
    brk.add_argument("--size", type=int, default=b.size, help="message length in chars")
    brk.add_argument("--duration", type=float, default=b.duration,
                     help="measured seconds per batch size")
    brk.add_argument("--warmup", type=float, default=b.warmup,
                     help="seconds of load before the measured ones, per row")
    brk.add_argument("--window", type=int, default=b.window, help="messages in flight")
    brk.add_argument("--at", default=None, metavar="REF",
                     help="run the broker as committed at a git ref (default: this checkout)")


# smoke and recovery: chats and members that cross edges, whatever the cores
ACROSS_EDGES = f"{OURS}/3"


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    d = Params()
    common.add_argument("--servers", type=_servers, default=list(SERVERS),
                        help=f"comma-separated, from {','.join(NAMES)}, ours:N (N broker "
                        "shards), ours/E (E edges; default one per server core), or ours@REF: "
                        "roomcast at a git ref, e.g. ours@HEAD~5; ours "
                        "keeps a durable store, ours-memory history in memory only (default: "
                        f"{','.join(SERVERS)})")
    common.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="directory for JSON, markdown and plots (default: bench/results)")
    common.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin servers and generator to separate cores")
    common.add_argument("--procs", type=int, default=None,
                        help="generator processes (default: one per generator core)")
    common.add_argument("--quiet", action="store_true", help="no progress display")
    common.add_argument("--rooms", type=int, default=d.rooms)
    common.add_argument("--members", type=int, default=d.members, help="per room")
    common.add_argument("--senders", type=int, default=d.senders, help="per room")
    common.add_argument("--window", type=int, default=d.window,
                        help="fan-out: unacknowledged messages per sender")
    common.add_argument("--size", type=int, default=d.size, help="message length in chars")
    common.add_argument("--duration", type=float, default=None,
                        help=f"seconds per run (default {d.duration:g}; smoke {SMOKE_DURATION:g})")
    common.add_argument("--rate", type=float, default=d.rate,
                        help="latency: total messages/s offered (split over all senders)")
    common.add_argument("--rates", type=_rates, default=d.rates,
                        help="sweep: comma-separated total rates")
    common.add_argument("--step", type=float, default=d.step, help="sweep: seconds per rate")
    common.add_argument("--connections", type=int, default=d.connections,
                        help="scale: idle connections")
    common.add_argument("--churners", type=int, default=d.churners,
                        help="churn: connections cycling at once per room")
    top = argparse.ArgumentParser(prog="chat-bench", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name, parents=[common], help=HELP[name])
        if name == "churn":
            command.add_argument(
                "--presence", action="store_true",
                help="every client connects as a user of its own (?user=&name=) and every "
                "join carries presence: true (ours only; the references are skipped)")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", type=Path, default=DEFAULT_OUT,
                     help="directory for JSON and markdown (default: bench/results)")
    out.add_argument("--no-pin", dest="pin", action="store_false",
                     help="do not pin the servers and the generator to separate cores")
    out.add_argument("--quiet", action="store_true", help="no progress notes")
    _extra_commands(sub, out)
    return top


def _params(args: argparse.Namespace) -> Params:
    default = SMOKE_DURATION if args.command == "smoke" else Params().duration
    return Params(
        rooms=args.rooms, members=args.members, senders=args.senders, window=args.window,
        size=args.size, duration=args.duration or default, rate=args.rate, rates=args.rates,
        step=args.step, connections=args.connections, churners=args.churners, procs=args.procs,
        presence=getattr(args, "presence", False),
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cpus = machine_plan(args.pin)
    progress = Progress(quiet=args.quiet)
    now = datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    logs = args.out / "logs" / stamp
    params = _params(args)
    # Three edges whatever the cores: the smoke run is about chats crossing edges.
    servers = [ACROSS_EDGES] if args.command == "smoke" else args.servers
    bench = Bench(params, cpus, logs, progress)
    session: dict[str, Any] = {
        "command": args.command,
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "stamp": stamp,
        "machine": machine.describe(),
        "revision": machine.revision(),
        "cpus": cpus.to_json(),
        "params": {k: getattr(params, k) for k in Params.__slots__},
        "servers": servers,
        "runs": [],
        "sweeps": [],
        "skipped": {},
        "failed": {},
    }
    progress.note(cpus.note)
    if params.presence:
        for name in servers:
            if parse_name(name)[0] not in (OURS, OURS_MEMORY):
                session["skipped"][name] = "no presence (protocol v2 section 7) to measure"
    for workload in COMMANDS[args.command]:
        for name in servers:
            if name in session["skipped"]:
                continue
            progress.note(f"{workload}: starting {name}")
            try:
                with running(name, cpus, logs) as started:
                    result = await getattr(bench, workload)(started)
                if started.store is not None and workload != "sweep":
                    result["store"] = started.store  # read once the broker stopped
            except Unavailable as exc:
                session["skipped"][name] = str(exc)
                progress.note(f"skipping {name}: {exc}")
                continue
            except Exception as exc:  # one design failing must not lose the others' results
                session["failed"][f"{workload} {name}"] = f"{type(exc).__name__}: {exc}"
                progress.note(f"{workload} {name} FAILED: {type(exc).__name__}: {exc}")
                continue
            if workload == "sweep":
                session["sweeps"].append(result)
                progress.note(f"sweep {name}: {result['knee_text']}")
            else:
                session["runs"].append(result)
                progress.note(one_line(result))
    session["summary"] = {"fanout": report.efficiency(session["runs"])}
    return session


def one_line(r: dict[str, Any]) -> str:
    if r["workload"] == "scale":
        return (
            f"scale {r['server']}: {r['connections']:,} connections in {r['connect_s']:.2f} s, "
            f"server RSS +{r['server_rss_held_mib'] - r['server_rss_idle_mib']:.1f} MiB "
            f"({r['rss_per_connection_kib']} KiB per connection)"
        )
    lat = r["latency_ms"]
    return (
        f"{r['workload']} {r['server']}: sent {r['sent']:,} received {r['received']:,}/"
        f"{r['expected']:,} loss {r['loss']:,} order {r['order_violations']} "
        f"dup {r['duplicates']} "
        f"leaks {r['leaks']} | {r['delivered_per_s']:,.0f} deliveries/s, "
        f"p99 {report.ms(lat['p99'])} ms | server CPU {r['server_cpu_s']:.2f} s, "
        f"load gen CPU {r['loadgen_cpu_s']:.2f} s"
    )


def smoke_failures(session: dict[str, Any]) -> list[str]:
    failures = [f"{what}: {why}" for what, why in session["failed"].items()]
    for r in session["runs"]:
        for key in ("loss", "order_violations", "leaks"):
            if r[key]:
                failures.append(f"{r['server']} {r['workload']}: {key} = {r[key]}")
        if not r["received"]:
            failures.append(f"{r['server']} {r['workload']}: nothing was delivered")
    if not session["runs"] and not failures:
        failures.append("no run completed")
    return failures


def _stamp() -> tuple[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%d-%H%M%S"), now.strftime("%Y-%m-%d %H:%M UTC")


def _write(out: Path, stem: str, session: dict[str, Any], text: str) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(session, indent=1) + "\n")
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out / stem}.json, .md", file=sys.stderr)


def _header(session: dict[str, Any]) -> str:
    return (f"{session['command']} at {session['date']}, roomcast {session['revision']}; "
            f"{session['cpus']['note']}; load average {session['load_average']}")


async def _recovery(args: argparse.Namespace) -> int:
    params = recovery.RecoveryParams(
        rooms=args.rooms, members=args.members, rate=args.rate, duration=args.duration,
        cuts=args.cuts, gap=args.gap, size=args.size)
    cpus = machine_plan(args.pin)
    stamp, date = _stamp()
    progress = Progress(quiet=args.quiet)
    progress.note(cpus.note)
    load = [brokerload.load_average()]
    before = os.sched_getaffinity(0)
    # Three edges whatever the cores: members reconnect to another edge.
    with running(ACROSS_EDGES, cpus, args.out / "logs" / stamp) as started:
        if cpus.pinned:
            os.sched_setaffinity(0, cpus.loadgen)
        try:
            result = await recovery.run(params, started, stamp)
        finally:
            os.sched_setaffinity(0, before)
    load.append(brokerload.load_average())
    session = {"command": "recovery", "date": date, "revision": machine.revision(),
               "cpus": cpus.to_json(), "load_average": " -> ".join(load), **result}
    _write(args.out, f"{stamp}-recovery", session,
           _header(session) + "\n\n" + recovery.markdown(result))
    failed = recovery.failures(result)
    for failure in failed:
        print(f"RECOVERY FAILED: {failure}", file=sys.stderr)
    return 1 if failed else 0


def _broker(args: argparse.Namespace) -> int:
    params = brokerload.BrokerParams(
        batches=args.batches, framings=args.framing, stores=args.stores, rooms=args.rooms,
        size=args.size, duration=args.duration, warmup=args.warmup, window=args.window,
        at=args.at)
    cpus = machine_plan(args.pin)
    stamp, date = _stamp()
    Progress(quiet=args.quiet).note(cpus.note)
    result = brokerload.run(params, cpus, args.out / "logs" / stamp)
    session = {"command": "broker", "date": date, "revision": machine.revision(),
               **result, "load_average": " -> ".join(result["load_average"])}
    if result["broker_commit"]:
        session["revision"] = f"{session['revision']} (broker at {result['broker_commit']})"
    _write(args.out, f"{stamp}-broker", session,
           _header(session) + "\n\n" + brokerload.markdown(session))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    raise_fd_limit()  # inherited by every server and generator process
    if args.command == "recovery":
        return asyncio.run(_recovery(args))
    if args.command == "broker":
        return _broker(args)
    session = asyncio.run(run(args))
    stem = f"{session['stamp']}-{args.command}"
    plot = None
    if session["sweeps"]:
        plot = plot_sweeps(session["sweeps"], args.out / f"{stem}-latency.png",
                           f"chat-bench latency sweep, {session['date']}")
    paths = report.write(args.out, stem, session, plot)
    print(report.markdown(session, plot.name if plot else None))
    for path in [*paths, *([plot] if plot else [])]:
        print(f"wrote {path}", file=sys.stderr)
    eff = session["summary"]["fanout"]
    for name, value in eff["deliveries_per_server_cpu_s"].items():
        print(f"fan-out deliveries per server CPU-second, {name}: {value:,.0f}", file=sys.stderr)
    for key, value in eff["ratios"].items():
        print(f"  {key}: {value:.2f}x", file=sys.stderr)
    if args.command == "smoke":
        failures = smoke_failures(session)
        for failure in failures:
            print(f"SMOKE FAILED: {failure}", file=sys.stderr)
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
