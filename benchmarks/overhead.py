#!/usr/bin/env python3
"""bridge's overhead over bare mitmdump, measured in one run on this machine.

Starts a fast local upstream, bare `mitmdump` in reverse mode and `bridge up` targets (each
in its own process), then drives the same load through each target: requests/s at 16
keep-alive connections and p50/p99 latency at one connection. Prints a table and each
target's ratios to mitmdump (the figure of merit: absolute numbers depend on the machine).
A report, not a test: it exits 0 whether or not the targets are met.

    python benchmarks/overhead.py [--duration 10] [--requests 2000] [--json] [--skip-llm]

Two loads, each measured against bare mitmdump receiving the same requests in the same run:
- GET /v1/bench, a small fixed JSON answer: targets `bridge` (no policies) and `resilient`;
- the LLM route, POST /v1/chat/completions with every body unique (a cache always misses),
  answered with a chat completion with `usage`: targets `spend` (usage priced) and `full`
  (every feature that exists on: retries, breaker, cache, spend, budget).

Targets are measured interleaved, so that a machine shared with other work slows them
alike: the c16 load runs in slices (mitmdump, bridge, mitmdump, bridge, ...) and the c1
requests go in small blocks to each target in turn. Throughput load generator: `wrk` when
it is on PATH (--generator builtin forces the other; for the LLM load wrk runs a Lua
`request` function making the unique bodies), else a built-in asyncio one over raw
keep-alive sockets; c1 latency always uses a built-in blocking-socket client (it alone can
interleave targets and send exactly --requests). Generators run in processes of their own.
Traffic goes to 127.0.0.1 only; every process started is stopped at the end, on Ctrl-C
and on errors too. To add a configuration, add a Target to TARGETS (GET) or LLM_TARGETS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
from _harness import Target, bridge, mitmdump, upstream_direct  # noqa: E402
from _llm import PLAIN_BODY  # noqa: E402
from _loadgen import GET_LOAD, LLM_LOAD  # noqa: E402

HOST = "127.0.0.1"
PATH = GET_LOAD["path"]
BODY = PLAIN_BODY
BASELINE = "mitmdump"
TARGET_THROUGHPUT_RATIO = 0.90  # bridge req/s >= 90% of mitmdump's (GET)
TARGET_P50_DELTA_MS = 0.3  # bridge p50 <= mitmdump p50 + 0.3 ms (GET)
LLM_TARGET_THROUGHPUT_RATIO = 0.95  # every feature on, still as fast as bare mitmdump
LLM_TARGET_P50_DELTA_MS = 0.2
HEADROOM = 3.0  # the upstream alone should serve at least this many times the fastest proxy
BUSY = 0.25  # share of all CPUs busy before the run above which the report warns

RESILIENCE = {
    "retry": {"attempts": 3, "backoff": {"initial": "100ms", "max": "2s"}},
    "breaker": {"failure_rate": "50%", "window": 20, "min_calls": 5, "open_for": "30s"},
    "timeout": {"connect": "2s", "total": "30s"},
}
SPEND = {"spend": {"provider": "openai"}}
# Every route feature that bridge enforces today. When rate limits work (config/support.py
# UNENFORCED lists them until then), add them here, e.g. "rate_limit": "1000000/min", so
# that `full` keeps measuring everything at once.
FULL = {
    "drift": {"learn": True, "action": "warn"},
    **RESILIENCE,
    "cache": {"ttl": "10m", "methods": ["POST"]},  # every body unique: each request a miss
    **SPEND,
    "budget": {"limit_usd": 1000000, "period": "day"},
}

TARGETS = [
    Target("upstream", upstream_direct, "the upstream alone: must be far above the proxies"),
    Target(BASELINE, mitmdump(), "bare mitmdump, reverse mode, connection_strategy=lazy"),
    Target("bridge", bridge(), "bridge up, one reverse route, no policies"),
    Target("resilient", bridge(RESILIENCE, name="resilient"),
           "bridge with retries and a breaker configured, none firing"),
]
# Measured with LLM_LOAD against the same upstream and mitmdump as TARGETS.
LLM_TARGETS = [
    Target("spend", bridge(SPEND, name="spend"), "LLM route, spend: {provider: openai}"),
    Target("full", bridge(FULL, name="full"),
           "LLM route, retries + breaker + cache (all misses) + spend + budget + drift"),
]


def measure(gen: str, started: dict[str, tuple[str, int]], args, run: h.Run) -> dict:
    """Both loads, each interleaved over its targets: {load: (slices, latencies)}."""
    get_names = [t.name for t in TARGETS]
    llm_names = ["upstream", BASELINE] + [t.name for t in LLM_TARGETS]
    out = {"get": h.measure_all(gen, {n: started[n] for n in get_names}, args, run.tmp)}
    if not args.skip_llm:
        out["llm"] = h.measure_all(gen, {n: started[n] for n in llm_names}, args, run.tmp, LLM_LOAD)
        out["llm_checks"] = bridge_checks(run, [t.name for t in LLM_TARGETS])
    return out


def bridge_checks(run: h.Run, names: list[str]) -> dict[str, dict]:
    """What each LLM target's bridge says it did: priced calls and cache hits."""
    time.sleep(1.0)  # the ledger is written in batches, off the request path
    out = {}
    for name in names:
        spend = h.control(run.homes[name], "spend")
        cache = h.control(run.homes[name], "cache")
        groups = spend.get("groups", [])
        out[name] = {"priced_calls": spend.get("calls"),
                     "unpriced_calls": sum(g.get("unpriced", 0) for g in groups),
                     "total_usd": spend.get("total_usd"),
                     "cache_hits": sum(r.get("hits", 0) for r in cache.get("routes", []))}
    return out


def comparisons(slices: dict[str, list[dict]], lat: dict[str, dict], min_ratio: float,
                max_delta: float) -> list[dict]:
    base = slices[BASELINE]
    out = []
    for name, rs in slices.items():
        if name in ("upstream", BASELINE):
            continue
        ratio = h.rate(rs) / h.rate(base)
        delta = lat[name]["p50_ms"] - lat[BASELINE]["p50_ms"]
        cpu, cpu_base = h.cpu_ms(rs), h.cpu_ms(base)
        out.append({
            "target": name, "baseline": BASELINE,
            "throughput_ratio": round(ratio, 3), "throughput_target": min_ratio,
            "throughput_pass": ratio >= min_ratio,
            # each slice against the baseline's slice of the same round: the spread within the run
            "throughput_ratio_slices": [round(h.rate([r]) / h.rate([b]), 3) for r, b in zip(rs, base, strict=True)],
            "p50_delta_ms": round(delta, 3), "p50_delta_target_ms": max_delta,
            "p50_pass": delta <= max_delta,
            # CPU per request, target over baseline: steadier than req/s when other work
            # takes CPU time from the proxies (informational, no target)
            "cpu_per_request_ratio": None if cpu is None or not cpu_base else round(cpu / cpu_base, 3)})
    return out


def headroom(rows: list[dict]) -> float:
    fastest_proxy = max(t["rps_c16"] for t in rows if t["name"] != "upstream")
    return round(next(t["rps_c16"] for t in rows if t["name"] == "upstream") / fastest_proxy, 1)


def report(args, gen_label: str, measured: dict, busy: float | None) -> dict:
    slices, lat = measured["get"]
    rows = h.target_rows(slices, lat)
    doc = {
        "generator": gen_label, "cpus": os.cpu_count(), "python": platform.python_version(),
        "cpu_busy_before": None if busy is None else round(busy, 2), "duration_s": args.duration,
        "slices": args.slices, "latency_requests": args.requests,
        "note": "absolute numbers are machine-bound; the ratios are the figure of merit",
        "upstream_headroom": headroom(rows),
        "targets": rows,
        "comparisons": comparisons(slices, lat, TARGET_THROUGHPUT_RATIO, TARGET_P50_DELTA_MS),
    }
    if "llm" in measured:
        slices, lat = measured["llm"]
        rows = h.target_rows(slices, lat)
        doc["llm"] = {
            "request": f"POST {LLM_LOAD['path']}, every body unique (cache misses), "
                       "answer: chat completion with usage, model gpt-4o-mini",
            "upstream_headroom": headroom(rows), "targets": rows,
            "comparisons": comparisons(slices, lat, LLM_TARGET_THROUGHPUT_RATIO, LLM_TARGET_P50_DELTA_MS),
            "bridge_says": measured["llm_checks"]}
    return doc


def print_comparisons(cs: list[dict]) -> None:
    for c in cs:
        sl = c["throughput_ratio_slices"]
        print(f"{c['target']} / {c['baseline']} throughput: {c['throughput_ratio']:.3f}  "
              f"(target >= {c['throughput_target']:.2f})  {'PASS' if c['throughput_pass'] else 'MISS'}"
              f"   slices {min(sl):.2f}..{max(sl):.2f}")
        print(f"{c['target']} - {c['baseline']} p50:        {c['p50_delta_ms']:+.3f} ms  "
              f"(target <= +{c['p50_delta_target_ms']:.1f} ms)  {'PASS' if c['p50_pass'] else 'MISS'}")
        if c["cpu_per_request_ratio"] is not None:
            print(f"{c['target']} / {c['baseline']} CPU per request: {c['cpu_per_request_ratio']:.3f}"
                  "  (informational: steadier than req/s on a busy machine)")


def print_headroom(value: float) -> None:
    if value < HEADROOM:
        print(f"\nwarning: the upstream alone is only {value}x the fastest proxy; "
              "it may be limiting the proxies' figures")


def print_table(doc: dict) -> None:
    print(f"\nbridge overhead benchmark: {doc['cpus']} CPU(s), Python {doc['python']}; "
          f"c16: {doc['generator']}, {doc['duration_s']:g} s per target in {doc['slices']} "
          f"interleaved slices; c1: {doc['latency_requests']} requests per target, interleaved")
    print("absolute numbers are machine-bound: the ratios below are the figure of merit\n")
    h.print_rows(doc["targets"])
    if (doc["cpu_busy_before"] or 0) > BUSY:
        print(f"\nwarning: {doc['cpu_busy_before']:.0%} of the CPUs were busy with other work before "
              "the run: figures are noisier (the interleaving keeps the comparison paired)")
    print_headroom(doc["upstream_headroom"])
    print()
    print_comparisons(doc["comparisons"])
    if "llm" not in doc:
        return
    llm = doc["llm"]
    print(f"\nLLM route: {llm['request']}\n")
    h.print_rows(llm["targets"])
    print_headroom(llm["upstream_headroom"])
    print()
    print_comparisons(llm["comparisons"])
    for name, s in llm["bridge_says"].items():
        print(f"{name}: bridge priced {s['priced_calls']} calls (${s['total_usd']}), "
              f"{s['unpriced_calls']} unpriced, {s['cache_hits']} cache hits")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of c16 load per target (default 10)")
    ap.add_argument("--requests", type=int, default=2000, help="c1 requests per target (default 2000)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of c16 load before measuring (default 2)")
    ap.add_argument("--slices", type=int, default=5, help="c16 load per target in N interleaved slices (default 5)")
    ap.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                    help="c16 load generator (default: wrk when on PATH)")
    ap.add_argument("--skip-llm", action="store_true", help="only the GET targets")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.requests < 100 or args.warmup < 1 or args.slices < 1 or args.duration < args.slices:
        ap.error("need --requests >= 100, --warmup >= 1, --slices >= 1, --duration >= --slices")
    gen, gen_label = h.pick_generator(args.generator)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a shell may start us ignoring it
        signal.signal(sig, on_signal)
    busy = h.cpu_busy()
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        run = h.Run(Path(tmp))
        try:
            h.start_upstream(run)
            started = {}
            for t in TARGETS + ([] if args.skip_llm else LLM_TARGETS):
                print(f"starting {t.name}: {t.about}", file=sys.stderr)
                started[t.name] = t.start(run)
            measured = measure(gen, started, args, run)
        except KeyboardInterrupt:
            print("interrupted: stopping everything", file=sys.stderr)
            return 130
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stop
            run.stop()
    doc = report(args, gen_label, measured, busy)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
