"""Fail-fast latency: an open circuit breaker versus waiting for the upstream's timeout.

Starts an upstream that accepts connections and never answers, and `bridge up` with one
route to it (timeout 500ms, a breaker that opens after 3 failures). The first requests
wait out the timeout; once the breaker is open, requests are refused at once with 503
`all_upstreams_unavailable`. Prints both latencies (p50/p99 over keep-alive requests from
one connection) and the ratio. Target (issue 3): p99 with the breaker open < 2 ms.

    ./dev bench            # every benchmark
    .venv/bin/python benchmarks/failfast.py [--requests 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import KeepAliveClient, pct, start_bridge, stop

TIMEOUT_MS = 500
TARGET_P99_MS = 2.0


def hanging_upstream() -> tuple[int, threading.Event]:
    """A server that accepts and reads but never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    stop = threading.Event()
    held: list[socket.socket] = []

    def run() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except TimeoutError:
                continue
        for c in held:
            c.close()
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests with the breaker open")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    up_port, stop_upstream = hanging_upstream()
    with tempfile.TemporaryDirectory() as tmp:
        proc, _, port = start_bridge(Path(tmp), f"""version: 2
control: {{listen: 127.0.0.1:0}}
routes:
  - name: hang
    listen: 127.0.0.1:0
    upstreams: [{{name: stuck, url: "http://127.0.0.1:{up_port}"}}]
    timeout: {TIMEOUT_MS}ms
    breaker: {{failure_rate: 50%, window: 3, min_calls: 3, open_for: 10m}}
""")
        try:
            client = KeepAliveClient(port)
            slow = []
            for _ in range(3):  # each waits out the upstream timeout; the third opens it
                t0 = time.perf_counter()
                status, _ = client.get("/work")
                slow.append((time.perf_counter() - t0) * 1000)
                assert status == 504, status
            for _ in range(200):  # warm-up
                client.get("/work")
            fast = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                status, _ = client.get("/work")
                fast.append((time.perf_counter() - t0) * 1000)
                assert status == 503, status
        finally:
            stop(proc)
            stop_upstream.set()

    doc = {
        "benchmark": "failfast",
        "upstream_timeout_ms": TIMEOUT_MS,
        "timeout_bound_ms": {"p50": round(statistics.median(slow), 3)},
        "breaker_open_ms": {"p50": round(pct(fast, 0.5), 3), "p99": round(pct(fast, 0.99), 3)},
        "speedup_p50": round(statistics.median(slow) / pct(fast, 0.5), 1),
        "target_p99_ms": TARGET_P99_MS,
        "pass": pct(fast, 0.99) < TARGET_P99_MS,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print("fail-fast: open breaker vs waiting for the upstream's timeout")
    print(f"  upstream timeout, breaker closed   p50 {doc['timeout_bound_ms']['p50']:9.3f} ms")
    print(f"  breaker open (503 at once)         p50 {doc['breaker_open_ms']['p50']:9.3f} ms   "
          f"p99 {doc['breaker_open_ms']['p99']:.3f} ms")
    print(f"  {doc['speedup_p50']:.0f}x faster; target p99 < {TARGET_P99_MS} ms: "
          f"{'PASS' if doc['pass'] else 'MISS'}")


if __name__ == "__main__":
    main()
