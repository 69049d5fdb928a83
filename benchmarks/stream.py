#!/usr/bin/env python3
"""A streamed LLM answer through bridge's forwarder versus bare mitmdump streaming it.

Starts the local upstream of _llm.py, which answers a chat completion asking for
`"stream": true` with Server-Sent Events: --events chunks --gap-ms apart (the first one a
gap after the headers, like a model's first token), then `data: [DONE]`, chunked. Then,
each in its own process:

- bare `mitmdump` in reverse mode with `--set stream_large_bodies=1`, so that it relays
  the answer as it arrives (without it mitmdump buffers the whole stream);
- `bridge up` with one reverse route, no policies: an SSE answer goes through bridge's
  forwarder (the attempt loop opens it, a loopback aiohttp server streams it back and
  mitmproxy relays that natively, DESIGN.md "mitmproxy facts");
- `bridge up` with the same route marked `llm: openai` (first_token and idle set): the
  headers are held until the first data event and every event is read on its way
  (stream_repair, the state stream_recovery needs).

One client sends --streams requests to each target (and to the upstream directly, for
reference), one at a time over a keep-alive connection, in blocks of 5 to each target in
turn (so that other work on the machine slows them alike), each with its own body. For
each it times the first byte of the first event (TTFB) and the end of the stream (total),
and checks that every event and `[DONE]` arrived. Prints p50/p99 of both per target and
bridge's p50 deltas to mitmdump. The issue sets no target for these: they are reported as
information. A report, not a test: it exits 0. Traffic stays on 127.0.0.1; every process
started is stopped at the end, on Ctrl-C and on errors too.

    .venv/bin/python benchmarks/stream.py [--streams 100] [--events 20] [--gap-ms 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
import _llm  # noqa: E402
from _harness import Target, bridge, mitmdump, upstream_direct  # noqa: E402

BASELINE = "mitmdump"
BLOCK = 5  # streams to one target before the next


class StreamClient:
    """One blocking keep-alive connection; `once(n)` -> (ttfb s, total s, complete?)."""

    def __init__(self, base: str, tag: str, events: int) -> None:
        u = urlsplit(base)
        self.addr, self.netloc, self.tag, self.events = (u.hostname, u.port), u.netloc, tag, events
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def once(self, n: int) -> tuple[float, float, bool]:
        body = _llm.chat_body(self.tag, n, stream=True)
        req = (f"POST {_llm.LLM_PATH} HTTP/1.1\r\nHost: {self.netloc}\r\nAccept: text/event-stream\r\n"
               f"Authorization: Bearer sk-bench-dummy\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        sock = self._connect()
        t0 = time.perf_counter()
        sock.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, _, buf = buf.partition(b"\r\n\r\n")
        lower = head.lower()
        first, data = None, b""
        if b"transfer-encoding: chunked" in lower:
            for piece in self._chunks(buf):
                first = first or time.perf_counter()
                data += piece
        else:  # a length, or close-delimited: read what it says
            length = _llm._content_length(head + b"\r\n") if b"content-length:" in lower else None
            data = buf
            while length is None or len(data) < length:
                first = first or (time.perf_counter() if data else None)
                chunk = self._recv(eof_ok=length is None)
                if not chunk:  # close-delimited: the end of the answer
                    self.sock = None
                    break
                data += chunk
        total = time.perf_counter() - t0
        first = first or time.perf_counter()
        ok = (head[9:12] == b"200" and data.endswith(b"data: [DONE]\n\n")
              and data.count(b"data: ") == self.events + 1)
        return first - t0, total, ok

    def _recv(self, eof_ok: bool = False) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk and not eof_ok:
            self.sock = None
            raise ConnectionError("the target closed the connection mid-answer")
        return chunk

    def _chunks(self, buf: bytes):
        """Yield the data of each HTTP chunk as it arrives; returns after the last one."""
        while True:
            while b"\r\n" not in buf:
                buf += self._recv()
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += self._recv()
            if size == 0:
                return  # no trailers from these targets: "0\r\n\r\n" ends it
            yield buf[:size]
            buf = buf[size + 2:]


def measure(targets: dict[str, tuple[str, int]], args) -> dict[str, dict]:
    """--streams streams to each target, interleaved in blocks; bounded in time."""
    tag = os.urandom(6).hex()
    clients = {name: StreamClient(url, f"{tag}-{name}", args.events) for name, (url, _) in targets.items()}
    per_stream = args.events * args.gap_ms / 1000 + 1.0
    deadline = time.monotonic() + 60 + per_stream * (args.streams + args.warmup) * len(targets)
    for name, c in clients.items():  # warm-up, and a first check that the answer is whole
        for i in range(args.warmup):
            if not c.once(-1 - i)[2]:
                raise RuntimeError(f"{name} did not relay the whole event stream")
    res = {name: {"ttfb": [], "total": [], "incomplete": 0, "cpu_s": 0.0} for name in targets}
    for start in range(0, args.streams, BLOCK):
        if time.monotonic() > deadline:
            raise RuntimeError("the streams took far longer than expected: stopping")
        for name, c in clients.items():
            before = h.cpu_seconds(targets[name][1])
            for n in range(start, min(start + BLOCK, args.streams)):
                ttfb, total, ok = c.once(n)
                r = res[name]
                r["ttfb"].append(ttfb)
                r["total"].append(total)
                r["incomplete"] += not ok
            after, spent = h.cpu_seconds(targets[name][1]), res[name]["cpu_s"]
            res[name]["cpu_s"] = None if None in (before, after, spent) else spent + after - before
    return res


def q(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[max(0, math.ceil(p * len(v)) - 1)] * 1000


def report(args, res: dict[str, dict], busy: float | None) -> dict:
    rows = [{"name": n, "ttfb_p50_ms": round(q(r["ttfb"], 0.5), 3), "ttfb_p99_ms": round(q(r["ttfb"], 0.99), 3),
             "total_p50_ms": round(q(r["total"], 0.5), 3), "total_p99_ms": round(q(r["total"], 0.99), 3),
             "cpu_ms_per_stream": None if r["cpu_s"] is None else round(1000 * r["cpu_s"] / args.streams, 2),
             "incomplete": r["incomplete"]} for n, r in res.items()]
    by = {r["name"]: r for r in rows}
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "cpu_busy_before": None if busy is None else round(busy, 2), "streams": args.streams,
            "events": args.events, "gap_ms": args.gap_ms, "targets": rows,
            "minus_mitmdump": {name: {
                "ttfb_p50_delta_ms": round(by[name]["ttfb_p50_ms"] - by[BASELINE]["ttfb_p50_ms"], 3),
                "total_p50_delta_ms": round(by[name]["total_p50_ms"] - by[BASELINE]["total_p50_ms"], 3)}
                for name in ("bridge", "bridge-llm")},
            "note": "no target set by the issue: informational"}


def print_table(doc: dict) -> None:
    print(f"\nstreamed LLM answer: {doc['cpus']} CPU(s), Python {doc['python']}; {doc['streams']} "
          f"streams per target, interleaved; each {doc['events']} SSE events {doc['gap_ms']:g} ms "
          "apart + [DONE]")
    print("TTFB: request sent -> first byte of the first event; total: -> end of the stream\n")
    print(f"{'target':<12}{'TTFB p50':>10}{'TTFB p99':>10}{'total p50':>11}{'total p99':>11}{'CPU ms/stream':>15}")
    for t in doc["targets"]:
        cpu = "-" if t["cpu_ms_per_stream"] is None else f"{t['cpu_ms_per_stream']:.2f}"
        flag = f"  (incomplete: {t['incomplete']})" if t["incomplete"] else ""
        print(f"{t['name']:<12}{t['ttfb_p50_ms']:>10.3f}{t['ttfb_p99_ms']:>10.3f}{t['total_p50_ms']:>11.3f}"
              f"{t['total_p99_ms']:>11.3f}{cpu:>15}{flag}")
    if (doc["cpu_busy_before"] or 0) > 0.25:
        print(f"\nwarning: {doc['cpu_busy_before']:.0%} of the CPUs were busy with other work before the run")
    print()
    for name, d in doc["minus_mitmdump"].items():
        print(f"{name} - mitmdump p50: TTFB {d['ttfb_p50_delta_ms']:+.3f} ms, "
              f"total {d['total_p50_delta_ms']:+.3f} ms  (informational: no target)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=100, help="streams per target (default 100)")
    ap.add_argument("--events", type=int, default=20, help="SSE events per stream before [DONE] (default 20)")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="ms between events (default 5)")
    ap.add_argument("--warmup", type=int, default=5, help="streams per target before measuring (default 5)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.streams < 10 or not 1 <= args.events <= 1000 or not 0 <= args.gap_ms <= 1000 or args.warmup < 1:
        ap.error("need --streams >= 10, 1 <= --events <= 1000, 0 <= --gap-ms <= 1000, --warmup >= 1")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a shell may start us ignoring it
        signal.signal(sig, on_signal)
    busy = h.cpu_busy()
    targets = [Target("upstream", upstream_direct, "the upstream alone (reference)"),
               Target(BASELINE, mitmdump("stream_large_bodies=1"), "bare mitmdump, streaming bodies"),
               Target("bridge", bridge(), "bridge up, one reverse route: streams via its forwarder"),
               Target("bridge-llm", bridge({"llm": "openai", "timeout": {"first_token": "10s", "idle": "10s"}},
                                           name="bridge-llm"),
                      "the same route with llm: openai: headers held to the first event, "
                      "each event read (repair, recovery ready)")]
    with tempfile.TemporaryDirectory(prefix="bridge-stream-") as tmp:
        run = h.Run(Path(tmp))
        try:
            h.start_upstream(run, args.events, args.gap_ms)
            started = {}
            for t in targets:
                print(f"starting {t.name}: {t.about}", file=sys.stderr)
                started[t.name] = t.start(run)
            print(f"{args.streams} streams to each target, interleaved", file=sys.stderr)
            res = measure(started, args)
        except KeyboardInterrupt:
            print("interrupted: stopping everything", file=sys.stderr)
            return 130
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stop
            run.stop()
    doc = report(args, res, busy)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
