"""Chaos accuracy: how close an injected latency is to the configured one, and how close the
faulted share is to the configured probability.

Starts a fast local upstream and `bridge up` with one reverse route, then (1) measures p50/p99
latency at one connection without a fault and with a `latency` fault of `--latency`, and
prints the added delay minus the configured one (target: within 10 ms at p50); (2) injects
a 30% status fault and counts faulted answers over `--requests` (target: within ±3 points).

    ./dev bench            # every benchmark
    .venv/bin/python benchmarks/chaos.py [--latency 100ms] [--requests 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

from _common import KeepAliveClient, control, pct, start_bridge, stop
from aiohttp import web

TARGET_DELAY_MS = 10.0
TARGET_POINTS = 3.0


def start_upstream() -> int:
    """A fast JSON upstream in a thread of its own."""
    port_box: list[int] = []
    ready = threading.Event()

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def run() -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/{t:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port_box.append(site._server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return port_box[0]


def timed(client: KeepAliveClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get("/x")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", default="100ms", help="the injected latency (default 100ms)")
    ap.add_argument("--samples", type=int, default=200, help="timed requests per case")
    ap.add_argument("--requests", type=int, default=2000, help="requests for the 30%% share")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    latency_ms = float(args.latency.removesuffix("ms")) if args.latency.endswith("ms") else \
        float(args.latency.removesuffix("s")) * 1000

    upstream = start_upstream()
    with tempfile.TemporaryDirectory() as tmp:
        proc, home, port = start_bridge(Path(tmp), f"""version: 2
control: {{listen: 127.0.0.1:0}}
routes:
  - name: bench
    listen: 127.0.0.1:0
    upstreams: [{{name: up, url: "http://127.0.0.1:{upstream}"}}]
""", "--seed", str(args.seed))
        try:
            client = KeepAliveClient(port)
            timed(client, 50)  # warm-up
            base = timed(client, args.samples)
            control(home, "POST", "faults", {"name": "slow", "route": "bench",
                                             "latency": args.latency})
            slow = timed(client, args.samples)
            control(home, "DELETE", "faults/slow")
            control(home, "POST", "faults", {"name": "share", "route": "bench", "status": 503,
                                             "probability": "30%"})
            faulted = sum(client.get("/x")[0] == 503 for _ in range(args.requests))
        finally:
            stop(proc)

    added = pct(slow, 0.5) - pct(base, 0.5)
    share = 100.0 * faulted / args.requests
    doc = {
        "benchmark": "chaos",
        "latency_ms": latency_ms,
        "p50_ms": {"without": round(pct(base, 0.5), 3), "with": round(pct(slow, 0.5), 3)},
        "p99_ms": {"without": round(pct(base, 0.99), 3), "with": round(pct(slow, 0.99), 3)},
        "added_minus_configured_ms": round(added - latency_ms, 3),
        "latency_pass": abs(added - latency_ms) <= TARGET_DELAY_MS,
        "share_percent": round(share, 2), "seed": args.seed, "requests": args.requests,
        "share_pass": abs(share - 30.0) <= TARGET_POINTS,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print("chaos accuracy through bridge (one keep-alive connection)")
    print(f"  p50 without a fault {doc['p50_ms']['without']:8.3f} ms   with latency "
          f"{latency_ms:g} ms: {doc['p50_ms']['with']:8.3f} ms")
    print(f"  added − configured at p50: {doc['added_minus_configured_ms']:+.3f} ms   "
          f"target within ±{TARGET_DELAY_MS:g} ms: {'PASS' if doc['latency_pass'] else 'MISS'}")
    print(f"  faulted share at 30%: {share:.2f}% of {args.requests} (seed {args.seed})   "
          f"target within ±{TARGET_POINTS:g} points: {'PASS' if doc['share_pass'] else 'MISS'}")


if __name__ == "__main__":
    main()
