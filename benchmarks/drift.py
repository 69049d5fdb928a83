#!/usr/bin/env python3
"""What schema-drift checking costs: a route with `drift: {learn: true}` against the same
route without it, in one run, on a ~10 KB JSON answer (a list of 64 records).

Starts the benchmarks' local upstream (GET /v1/catalog answers the JSON), bare mitmdump
for reference, and two `bridge up` processes: `plain` (no drift) and `drift` (drift
learning and checking every answer). Each gets the same load: p50/p99 at one connection
in interleaved blocks, and requests/s at 16 connections in interleaved slices. Prints the
p50 that drift adds (target: under 0.5 ms) and its throughput relative to `plain`.
A report, not a test: it exits 0 whether or not the target is met. Loopback only.

    python benchmarks/drift.py [--duration 8] [--requests 1500] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
from _llm import CATALOG, CATALOG_PATH  # noqa: E402

TARGET_P50_MS = 0.5  # drift adds less than this at p50 on a 10 KB JSON answer
LOAD = {"path": CATALOG_PATH}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of c16 load per target")
    ap.add_argument("--requests", type=int, default=1500, help="c1 requests per target")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    gen, gen_label = h.pick_generator(args.generator)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        run = h.Run(Path(tmp))
        try:
            h.start_upstream(run)
            started = {"mitmdump": h.mitmdump()(run),
                       "plain": h.bridge(name="plain")(run),
                       "drift": h.bridge({"drift": {"learn": True}}, name="drift")(run)}
            slices, lat = h.measure_all(gen, started, args, run.tmp, LOAD)
            findings = h.control(run.homes["drift"], "drift")
        except (RuntimeError, OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            run.stop()
    added = lat["drift"]["p50_ms"] - lat["plain"]["p50_ms"]
    doc = {"generator": gen_label, "body_bytes": len(CATALOG),
           "targets": h.target_rows(slices, lat),
           "drift_p50_added_ms": round(added, 3), "target_ms": TARGET_P50_MS,
           "pass": added < TARGET_P50_MS,
           "drift_vs_plain_throughput": round(h.rate(slices["drift"]) / h.rate(slices["plain"]), 3),
           "findings": len(findings.get("findings", [])) if isinstance(findings, dict) else None}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"\ndrift on a {len(CATALOG):,}-byte JSON answer ({gen_label})\n")
    h.print_rows(doc["targets"])
    verdict = "PASS" if doc["pass"] else "MISS"
    print(f"\ndrift - plain p50: {added:+.3f} ms  (target < +{TARGET_P50_MS} ms)  {verdict}")
    print(f"drift / plain throughput: {doc['drift_vs_plain_throughput']:.3f}")
    print(f"findings raised on an unchanging answer: {doc['findings']} (must be 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
