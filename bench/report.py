"""Results as JSON (everything) and as markdown tables (what a reader compares)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TITLES = {
    "fanout": "Fan-out throughput (closed loop)",
    "latency": "Latency under load (open loop, fixed rate)",
    "sweep": "Latency sweep (open loop, rising rate)",
    "churn": "Churn (connect, join, chat, leave, disconnect)",
    "scale": "Connection scale (idle joined connections)",
}
ORDER = ("fanout", "latency", "sweep", "churn", "scale")
MIB = 1024 * 1024


def num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def efficiency(runs: list[dict[str, Any]], workload: str = "fanout") -> dict[str, Any]:
    """Deliveries per server CPU-second for each design, and ours divided by each other."""
    per = {r["server"]: r["deliveries_per_server_cpu_s"] for r in runs
           if r["workload"] == workload and r["deliveries_per_server_cpu_s"]}
    ours = per.get("ours")
    ratios = {f"ours ÷ {name}": ours / value for name, value in per.items()
              if ours and name != "ours"}
    return {"deliveries_per_server_cpu_s": per, "ratios": ratios}


def _traffic_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in runs:
        lat = r["latency_ms"]
        gen = f"{num(r['loadgen_cpu_s'], 2)} ({num(r['loadgen_cpu_pct'])} %)"
        if r["loadgen_saturated"]:
            gen += " ⚠"
        rows.append([
            r["server"], num(r["sent"]), num(r["expected"]), num(r["received"]),
            f"{num(r['loss'])} ({r['loss_pct']:.2f} %)", num(r["order_violations"]),
            num(r["duplicates"]), num(r["leaks"]), num(r["errors"]), num(r["delivered_per_s"]),
            ms(lat["p50"]), ms(lat["p90"]), ms(lat["p99"]), ms(lat["p99.9"]), ms(lat["max"]),
            f"{num(r['server_cpu_s'], 2)} ({num(r['server_cpu_pct'])} %)",
            num(r["deliveries_per_server_cpu_s"]), gen, num(r["server_peak_rss_mib"], 1),
            f"{num(r['other_cpu_pct'])} %",
        ])
    return rows


TRAFFIC_HEADER = [
    "server", "sent", "expected", "received", "loss", "order viol.", "dup.", "leaks", "errors",
    "delivered/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
    "server CPU s (% of its cores)", "deliveries / server CPU-s",
    "load gen CPU s (% of its cores)", "server peak RSS MiB", "other load on the machine",
]


def _params_line(run: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in run["params"].items())


def _section(workload: str, runs: list[dict[str, Any]], sweeps: list[dict[str, Any]],
             plot: str | None) -> list[str]:
    lines = [f"## {TITLES[workload]}", ""]
    if workload == "sweep":
        if not sweeps:
            return []
        lines.append(f"Parameters: {_params_line(sweeps[0]['points'][0])} "
                     "(offered_per_s varies)")
        lines.append("")
        rows = []
        for sweep in sweeps:
            for r in sweep["points"]:
                lat = r["latency_ms"]
                rows.append([
                    sweep["server"], num(r["params"]["offered_per_s"]), num(r["sent_per_s"]),
                    num(r["delivered_per_s"]), f"{r['loss_pct']:.2f} %", ms(lat["p50"]),
                    ms(lat["p99"]), ms(lat["p99.9"]), num(r["server_cpu_pct"]),
                    num(r["loadgen_cpu_pct"]), num(r["other_cpu_pct"]),
                ])
        lines += table(["server", "offered msgs/s", "sent/s", "delivered/s", "loss", "p50 ms",
                        "p99 ms", "p99.9 ms", "server CPU %", "load gen CPU %",
                        "other load %"], rows)
        lines.append("")
        lines += [f"- **{s['server']}**: {s['knee_text']}" for s in sweeps]
        if plot:
            lines += ["", f"![latency against offered load]({plot})"]
        return [*lines, ""]
    if not runs:
        return []
    lines += [f"Parameters: {_params_line(runs[0])}", ""]
    if workload == "scale":
        rows = [[
            r["server"], num(r["connections"]), num(r["connect_s"], 2), num(r["connects_per_s"]),
            num(r["server_rss_idle_mib"], 1), num(r["server_rss_held_mib"], 1),
            num(r["rss_per_connection_kib"], 2), num(r["server_setup_cpu_s"], 2),
            num(r["loadgen_setup_cpu_s"], 2), num(r["server_peak_rss_mib"], 1),
        ] for r in runs]
        lines += table(["server", "connections", "connect s", "connects/s",
                        "server RSS idle MiB", "server RSS held MiB", "RSS / connection KiB",
                        "server CPU s while connecting", "load gen CPU s while connecting",
                        "server peak RSS MiB"], rows)
        return [*lines, ""]
    header, rows = list(TRAFFIC_HEADER), _traffic_rows(runs)
    if workload == "churn":
        header += ["cycles/s", "cycle p50 ms", "cycle p99 ms", "server CPU ms / cycle",
                   "presence events"]
        for row, r in zip(rows, runs, strict=True):
            extra = r["extra"]
            cycles = extra.get("cycles") or 0
            row += [num(extra.get("cycles_per_s")), ms(extra["cycle_ms"]["p50"]),
                    ms(extra["cycle_ms"]["p99"]),
                    ms(1000.0 * r["server_cpu_s"] / cycles) if cycles else "–",
                    num(extra.get("presence_events"))]
    lines += table(header, rows)
    lines += _stores(runs)
    if workload == "fanout":
        eff = efficiency(runs)
        if eff["ratios"]:
            lines += ["", "Deliveries per server CPU-second, ours divided by each reference: "
                      + ", ".join(f"{k} = {v:.2f}×" for k, v in eff["ratios"].items())]
    return [*lines, ""]


def _stores(runs: list[dict[str, Any]]) -> list[str]:
    """The durable brokers' stores, as they stood once the run was over."""
    lines = []
    for r in runs:
        store = r.get("store")
        if not store:
            continue
        per = store["bytes_per_1000_chats"]
        lines.append(
            f"- {r['server']}'s store at the end: {store['disk_bytes'] / MIB:,.1f} MiB on disk "
            f"for {store['chats']:,} chats in {store['rows']:,} rows ({store['rooms']:,} rooms)"
            + (f": {per / 1024:,.0f} KiB per 1,000 chats" if per else ""))
    return ["", *lines] if lines else []


def markdown(session: dict[str, Any], plot: str | None = None) -> str:
    m = session["machine"]
    lines = [
        f"# chat-bench `{session['command']}`: {session['date']}",
        "",
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}, Node {m['node'] or 'absent'}, {m['redis'] or 'no redis'}",
        f"- cores: {session['cpus']['note']}",
        f"- code: commit {session.get('revision') or 'unknown'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items() if v),
        "- latency: from the time a message was due to be sent (monotonic clock, same "
        "machine) to its arrival at each member; CPU seconds count from go to the last "
        "delivery or drain timeout",
        "- other load: CPU used by processes outside the run while it ran, as a share of "
        "all cores; high values mean the numbers are noisy",
    ]
    for name, why in session.get("skipped", {}).items():
        lines.append(f"- skipped {name}: {why}")
    for what, why in session.get("failed", {}).items():
        lines.append(f"- **failed** {what}: {why}")
    lines.append("")
    runs = session["runs"]
    for workload in ORDER:
        lines += _section(workload, [r for r in runs if r["workload"] == workload],
                          session.get("sweeps", []) if workload == "sweep" else [], plot)
    detail = [r for r in runs if r["workload"] != "sweep"]
    if detail:
        lines += ["## Every process", ""]
        rows = [[r["workload"], r["server"], p["name"], p["role"], num(p["cpu_s"], 2),
                 num(p["peak_rss_mib"], 1)] for r in detail for p in r["processes"]]
        lines += table(["workload", "server", "process", "role", "CPU s", "peak RSS MiB"], rows)
        lines.append("")
    return "\n".join(lines)


def write(out: Path, stem: str, session: dict[str, Any], plot: Path | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    md_path = out / f"{stem}.md"
    json_path.write_text(json.dumps(finite(session), indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(session, plot.name if plot else None))
    return [json_path, md_path]


def finite(value: Any) -> Any:
    """NaN and infinity (a percentile of nothing) become null: JSON has no word for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
