"""Turn what the generator processes and /proc said into one run's result (plain data)."""

from __future__ import annotations

from typing import Any

from bench.pinning import CpuPlan
from bench.runner import RawRun
from bench.servers import ServerSet
from bench.stats import Histogram, merged

MIB = 1024 * 1024
SATURATED = 90.0  # percent of its cores above which the generator is likely the bottleneck


def summarize(workload: str, servers: ServerSet, params: dict[str, Any], raw: RawRun,
              cpus: CpuPlan) -> dict[str, Any]:
    results = raw.results
    sent = sum(r["sent"] for r in results)
    expected = sum(r["expected"] for r in results)
    received = sum(r["received"] for r in results)
    window = max(r["finished"] for r in results) - min(r["started"] for r in results)
    if window <= 0:
        window = raw.end_at - raw.go_at
    latency = merged(Histogram.from_json(r["latency"]) for r in results)

    processes: list[dict[str, Any]] = []
    for p in raw.procs:
        start, end = raw.held[p.pid], raw.end[p.pid]
        processes.append({
            "role": p.role,
            "name": p.name,
            "cpu_s": round(end.cpu_s - start.cpu_s, 3),
            "peak_rss_mib": round(end.peak_rss_bytes / MIB, 1),
            "rss_idle_mib": round(raw.idle[p.pid].rss_bytes / MIB, 1) if p.pid in raw.idle
            else None,
            "rss_held_mib": round(start.rss_bytes / MIB, 1),
            "setup_cpu_s": round(raw.setup_cpu.get(p.pid, 0.0), 3),
        })
    servers_only = [p for p in processes if p["role"] == "server"]
    server_cpu = sum(p["cpu_s"] for p in servers_only)
    loadgen_cpu = sum(p["cpu_s"] for p in processes if p["role"] == "loadgen")
    loadgen_pct = 100.0 * loadgen_cpu / (window * len(cpus.loadgen)) if window > 0 else 0.0

    connections = sum(r["connections"] for r in raw.ready)
    connect_s = (max(r["connect_end"] for r in raw.ready)
                 - min(r["connect_start"] for r in raw.ready))
    rss_idle = sum(raw.idle[p.pid].rss_bytes for p in raw.procs if p.role == "server")
    rss_held = sum(raw.held[p.pid].rss_bytes for p in raw.procs if p.role == "server")
    lost = sum(r["missing"] for r in results)
    return {
        "workload": workload,
        "server": servers.name,
        "design": servers.description,
        "params": params,
        "sent": sent,
        "expected": expected,
        "received": received,
        "loss": lost,
        "loss_pct": 100.0 * lost / expected if expected else 0.0,
        "order_violations": sum(r["order_violations"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "leaks": sum(r["leaks"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "duration_s": round(window, 3),
        "sent_per_s": sent / window if window > 0 else 0.0,
        "delivered_per_s": received / window if window > 0 else 0.0,
        "latency_ms": latency.summary_ms(),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_pct": 100.0 * server_cpu / (window * len(cpus.servers)) if window > 0 else 0.0,
        "deliveries_per_server_cpu_s": received / server_cpu if server_cpu > 0 else None,
        "loadgen_cpu_s": round(loadgen_cpu, 3),
        "loadgen_cpu_pct": loadgen_pct,
        "loadgen_saturated": loadgen_pct >= SATURATED,
        # CPU that went to processes outside this run (other work on the machine): noise.
        "other_cpu_s": round(max(0.0, raw.machine_busy_s - server_cpu - loadgen_cpu), 2),
        "other_cpu_pct": (
            100.0 * max(0.0, raw.machine_busy_s - server_cpu - loadgen_cpu)
            / ((raw.end_at - raw.go_at) * (len(set(cpus.servers) | set(cpus.loadgen))))
        ),
        "server_peak_rss_mib": round(sum(p["peak_rss_mib"] for p in servers_only), 1),
        "connections": connections,
        "connect_s": round(connect_s, 3),
        "connects_per_s": connections / connect_s if connect_s > 0 else None,
        "server_setup_cpu_s": round(sum(p["setup_cpu_s"] for p in servers_only), 3),
        "loadgen_setup_cpu_s": round(
            sum(p["setup_cpu_s"] for p in processes if p["role"] == "loadgen"), 3
        ),
        "server_rss_idle_mib": round(rss_idle / MIB, 1),
        "server_rss_held_mib": round(rss_held / MIB, 1),
        "rss_per_connection_kib": (
            round((rss_held - rss_idle) / connections / 1024, 2) if connections else None
        ),
        "processes": processes,
        "extra": _extra(results),
    }


def _extra(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Churn reports cycles and their timing; sum and merge them across processes."""
    extras = [r["extra"] for r in results if r.get("extra")]
    if not extras:
        return {}
    cycles = sum(e["cycles"] for e in extras)
    elapsed = max(e["elapsed_s"] for e in extras)
    timing = merged(Histogram.from_json(e["cycle_hist"]) for e in extras)
    return {
        "cycles": cycles,
        "cycles_per_s": cycles / elapsed if elapsed > 0 else 0.0,
        "cycle_ms": timing.summary_ms(),
        "presence_events": sum(e.get("presence_events", 0) for e in extras),
    }
