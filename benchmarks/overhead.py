#!/usr/bin/env python3
"""bridge's overhead over bare mitmdump, measured in one run on this machine.

Starts a fast local upstream, bare `mitmdump` in reverse mode and `bridge up` with one
reverse route (each in its own process), then drives the same load through each target:
requests/s at 16 keep-alive connections and p50/p99 latency at one connection. Prints a
table and bridge's ratios to mitmdump (the figure of merit: absolute numbers depend on the
machine). A report, not a test: it exits 0 whether or not the targets are met.

    python benchmarks/overhead.py [--duration 10] [--requests 2000] [--rounds 1] [--json]

Load generator: `wrk` when it is on PATH (--generator builtin to force the other), else a
built-in one (asyncio over raw keep-alive sockets for c16, a blocking socket for c1) in a
separate process. Traffic goes to 127.0.0.1 only; every process started is stopped at the
end, on Ctrl-C and on errors too. To add a configuration, add a Target to TARGETS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PATH = "/v1/bench"
BODY = b'{"id":"bench-0001","object":"bench.result","ok":true,"items":[1,2,3],"model":"local"}'
BASELINE = "mitmdump"
TARGET_THROUGHPUT_RATIO = 0.90  # bridge req/s >= 90% of mitmdump's
TARGET_P50_DELTA_MS = 0.3  # bridge p50 <= mitmdump p50 + 0.3 ms
HEADROOM = 3.0  # the upstream alone should serve at least this many times the fastest proxy
START_TIMEOUT = 30.0  # seconds for any process to come up


# --- the processes a run starts ----------------------------------------------------------


@dataclass
class Run:
    """Everything one benchmark run started; `stop()` ends all of it."""

    tmp: Path
    upstream_port: int = 0
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
        finally:
            log.close()
        self.procs.append((name, p))
        return p

    def wait_for(self, name: str, p: subprocess.Popen, ready: Callable[[], object]):
        """Poll `ready()` until it returns something truthy; fail if `p` dies or time runs out."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} at start-up:\n{self.log_tail(name)}")
            try:
                value = ready()
            except (OSError, ValueError, KeyError):
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not come up within {START_TIMEOUT:.0f}s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        for _, p in reversed(self.procs):  # SIGTERM all first: they shut down in parallel
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(5)
        self.procs.clear()


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # the child leads its own session (start_new_session)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def start_upstream(run: Run) -> None:
    port_file = run.tmp / "upstream.port"
    p = run.spawn("upstream", [sys.executable, __file__, "_upstream", str(port_file)])
    run.upstream_port = run.wait_for("upstream", p, lambda: int(port_file.read_text()))


# --- targets: (name, how to start it -> its base URL, what it is) -------------------------


@dataclass(frozen=True)
class Target:
    name: str
    start: Callable[[Run], str]
    about: str


def upstream_direct(run: Run) -> str:
    return f"http://{HOST}:{run.upstream_port}"


def mitmdump(run: Run) -> str:
    exe = Path(sys.executable).parent / "mitmdump"
    exe = str(exe) if exe.exists() else shutil.which("mitmdump")
    if not exe:
        raise RuntimeError("mitmdump not found next to this Python nor on PATH")
    port = free_port()
    confdir = run.tmp / "mitmdump-conf"
    confdir.mkdir()
    p = run.spawn("mitmdump", [
        exe, "-q", "--mode", f"reverse:http://{HOST}:{run.upstream_port}@{HOST}:{port}",
        "--set", "connection_strategy=lazy", "--set", f"confdir={confdir}"])
    run.wait_for("mitmdump", p, lambda: accepts(port))
    return f"http://{HOST}:{port}"


def bridge(route_extra: dict | None = None, name: str = "bridge") -> Callable[[Run], str]:
    """`bridge up` with one reverse route to the upstream; `route_extra` adds route keys
    (retry, breaker, cache, ...) for the configurations later issues benchmark."""

    def start(run: Run) -> str:
        home = run.tmp / f"{name}-home"
        home.mkdir(mode=0o700)
        route = {"name": "bench", "listen": f"{HOST}:0",
                 "upstreams": [{"name": "up", "url": f"http://{HOST}:{run.upstream_port}"}],
                 **(route_extra or {})}
        config = run.tmp / f"{name}.yaml"  # JSON is YAML, and quotes every string
        config.write_text(json.dumps({"version": 2, "control": {"listen": f"{HOST}:0"},
                                      "routes": [route]}, indent=2))
        p = run.spawn(name, [sys.executable, "-m", "bridge_cli", "up", "-c", str(config), "-q"],
                      env={"BRIDGE_HOME": str(home)})

        def ready() -> str | None:
            control = json.loads((home / "control.json").read_text())
            req = urllib.request.Request(control["url"] + "/api/v1/status",
                                         headers={"Authorization": f"Bearer {control['token']}"})
            with urllib.request.urlopen(req, timeout=2) as r:
                status = json.load(r)
            return next((f"http://{x['address']}" for x in status["listeners"]
                         if x["kind"] == "reverse" and x["name"] == "bench"), None)

        return run.wait_for(name, p, ready)

    return start


TARGETS = [
    Target("upstream", upstream_direct, "the upstream alone: must be far above the proxies"),
    Target(BASELINE, mitmdump, "bare mitmdump, reverse mode, connection_strategy=lazy"),
    Target("bridge", bridge(), "bridge up, one reverse route, no policies"),
]


# --- load generators (each measurement is its own process) -------------------------------


def wrk_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    words = (out.stdout + out.stderr).split()
    return f"wrk {words[1]}" if len(words) > 1 else "wrk"


WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"seconds":%.6f,"p50_ms":%.4f,"p99_ms":%.4f,'
    .. '"bad_status":%d,"errors":%d}\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""
WRK_STOP_AFTER = """
local limit, count = %d, 0
function response(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
"""


def measure(gen: str, url: str, conns: int, *, seconds: float = 0, requests: int = 0,
            tmp: Path) -> dict:
    """One measurement: `seconds` of load at `conns` connections, or `requests` at one."""
    cap = seconds + 30 if seconds else 120  # bounded whatever the target does
    if gen == "builtin":
        spec = json.dumps({"url": url + PATH, "conns": conns, "seconds": seconds, "requests": requests})
        out = subprocess.run([sys.executable, __file__, "_load", spec], capture_output=True,
                             text=True, timeout=cap)
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed: {out.stderr.strip()[-2000:]}")
        return json.loads(out.stdout)
    script = tmp / f"wrk-{requests}.lua"
    script.write_text((WRK_STOP_AFTER % requests if requests else "") + WRK_DONE)
    argv = [gen, "-t1", f"-c{conns}", f"-d{math.ceil(seconds) if seconds else 110}s",
            "--timeout", "10s", "-s", str(script), url + PATH]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=cap)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]}{out.stderr[-1000:]}")
    return json.loads(line[6:])


def _content_length(head: bytes) -> int:
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        raise ValueError(f"response without Content-Length: {head[:200]!r}")
    end = head.find(b"\r\n", i + 2)
    return int(head[i + 17:end if end >= 0 else None])


def _load_main(spec: dict) -> dict:
    from urllib.parse import urlsplit

    u = urlsplit(spec["url"])
    req = f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: */*\r\n\r\n".encode()
    if spec["requests"]:
        return _latency(u.hostname, u.port, req, spec["requests"])
    return asyncio.run(_throughput(u.hostname, u.port, req, spec["conns"], spec["seconds"]))


def _latency(host: str, port: int, req: bytes, n: int) -> dict:
    """n requests, one at a time, over one blocking keep-alive socket."""
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat, bad, buf = [], 0, b""
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                total = end + 4 + _content_length(buf[:end + 2])
                if len(buf) >= total:
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the target closed the connection")
            buf += chunk
        lat.append(time.perf_counter() - t0)
        bad += buf[9:12] != b"200"
        buf = buf[total:]
    s.close()
    lat.sort()
    return {"requests": n, "seconds": time.perf_counter() - started, "bad_status": bad, "errors": 0,
            "p50_ms": lat[(n - 1) // 2] * 1000, "p99_ms": lat[math.ceil(0.99 * n) - 1] * 1000}


async def _throughput(host: str, port: int, req: bytes, conns: int, seconds: float) -> dict:
    """`conns` keep-alive connections, each sending its next request as soon as the last ends."""
    counts = {"ok": 0, "bad": 0, "errors": 0}
    streams = [await asyncio.open_connection(host, port) for _ in range(conns)]
    deadline = time.perf_counter() + seconds

    async def drive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while time.perf_counter() < deadline:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head[:-2]))
                counts["ok" if head[9:12] == b"200" else "bad"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counts["errors"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(drive(r, w) for r, w in streams)), seconds + 20)
    done = counts["ok"] + counts["bad"]
    return {"requests": done, "seconds": time.perf_counter() - started,
            "bad_status": counts["bad"], "errors": counts["errors"], "p50_ms": None, "p99_ms": None}


# --- the upstream: a minimal HTTP/1.1 keep-alive server, one fixed JSON answer ------------


RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


class _Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        buf, out = self.buf + data, []
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head = buf[:end + 2]
            length = _content_length(head) if b"content-length:" in head.lower() else 0
            if len(buf) < end + 4 + length:
                break
            buf = buf[end + 4 + length:]
            out.append(RESPONSE)
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))


async def _upstream_main(port_file: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, HOST, 0, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tmp = port_file + ".tmp"
    Path(tmp).write_text(str(server.sockets[0].getsockname()[1]))
    os.replace(tmp, port_file)
    await stop.wait()
    server.close()


# --- the run ------------------------------------------------------------------------------


def bench_target(gen: str, url: str, args, tmp: Path) -> dict:
    with urllib.request.urlopen(url + PATH, timeout=5) as r:  # a misrouted 502 would be fast
        if r.status != 200 or r.read() != BODY:
            raise RuntimeError(f"{url}{PATH} did not return the upstream's body")
    measure(gen, url, 16, seconds=args.warmup, tmp=tmp)
    tput = measure(gen, url, 16, seconds=args.duration, tmp=tmp)
    lat = measure(gen, url, 1, requests=args.requests, tmp=tmp)
    return {"rps_c16": tput["requests"] / tput["seconds"], "p50_ms_c1": lat["p50_ms"],
            "p99_ms_c1": lat["p99_ms"], "latency_requests": lat["requests"],
            "bad_status": tput["bad_status"] + lat["bad_status"],
            "errors": tput["errors"] + lat["errors"]}


def median_of(rounds: list[dict]) -> dict:
    out = {k: sorted(r[k] for r in rounds)[(len(rounds) - 1) // 2] for k in ("rps_c16", "p50_ms_c1", "p99_ms_c1")}
    out.update(bad_status=sum(r["bad_status"] for r in rounds), errors=sum(r["errors"] for r in rounds))
    if len(rounds) > 1:
        out["rounds_rps_c16"] = [round(r["rps_c16"], 1) for r in rounds]
    return out


def report(args, gen_label: str, results: dict[str, dict]) -> dict:
    base = results[BASELINE]
    comparisons = []
    for name, r in results.items():
        if name in ("upstream", BASELINE):
            continue
        ratio = r["rps_c16"] / base["rps_c16"]
        delta = r["p50_ms_c1"] - base["p50_ms_c1"]
        comparisons.append({
            "target": name, "baseline": BASELINE,
            "throughput_ratio": round(ratio, 3), "throughput_target": TARGET_THROUGHPUT_RATIO,
            "throughput_pass": ratio >= TARGET_THROUGHPUT_RATIO,
            "p50_delta_ms": round(delta, 3), "p50_delta_target_ms": TARGET_P50_DELTA_MS,
            "p50_pass": delta <= TARGET_P50_DELTA_MS})
    fastest_proxy = max(r["rps_c16"] for n, r in results.items() if n != "upstream")
    return {
        "generator": gen_label, "cpus": os.cpu_count(), "python": platform.python_version(),
        "duration_s": args.duration, "latency_requests": args.requests, "rounds": args.rounds,
        "note": "absolute numbers are machine-bound; the ratios are the figure of merit",
        "upstream_headroom": round(results["upstream"]["rps_c16"] / fastest_proxy, 1),
        "targets": [{"name": n, **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}}
                    for n, r in results.items()],
        "comparisons": comparisons,
    }


def print_table(doc: dict) -> None:
    print(f"\nbridge overhead benchmark: load generator {doc['generator']}, {doc['cpus']} CPU(s), "
          f"Python {doc['python']}, {doc['duration_s']:g} s @c16, {doc['latency_requests']} requests @c1"
          + (f", median of {doc['rounds']} rounds" if doc["rounds"] > 1 else ""))
    print("absolute numbers are machine-bound: the ratios below are the figure of merit\n")
    print(f"{'target':<12}{'req/s @c16':>12}{'p50 ms @c1':>12}{'p99 ms @c1':>12}")
    for t in doc["targets"]:
        flag = "  (non-200/errors: %d/%d)" % (t["bad_status"], t["errors"]) if t["bad_status"] or t["errors"] else ""
        print(f"{t['name']:<12}{t['rps_c16']:>12,.0f}{t['p50_ms_c1']:>12.3f}{t['p99_ms_c1']:>12.3f}{flag}")
    if doc["upstream_headroom"] < HEADROOM:
        print(f"\nwarning: the upstream alone is only {doc['upstream_headroom']}x the fastest proxy; "
              "it may be limiting the proxies' figures")
    print()
    for c in doc["comparisons"]:
        print(f"{c['target']} / {c['baseline']} throughput: {c['throughput_ratio']:.3f}  "
              f"(target >= {c['throughput_target']:.2f})  {'PASS' if c['throughput_pass'] else 'MISS'}")
        print(f"{c['target']} - {c['baseline']} p50:        {c['p50_delta_ms']:+.3f} ms  "
              f"(target <= +{c['p50_delta_target_ms']:.1f} ms)  {'PASS' if c['p50_pass'] else 'MISS'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load at c16 (default 10)")
    ap.add_argument("--requests", type=int, default=2000, help="requests at c1 for latency (default 2000)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of c16 load before measuring (default 2)")
    ap.add_argument("--rounds", type=int, default=1, help="measure every target N times, interleaved; report medians")
    ap.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.duration < 1 or args.requests < 100 or args.rounds < 1 or args.warmup < 1:
        ap.error("need --duration >= 1, --warmup >= 1, --requests >= 100, --rounds >= 1")

    wrk = shutil.which("wrk")
    if args.generator == "wrk" and not wrk:
        ap.error("--generator wrk: wrk is not on PATH")
    gen = wrk if wrk and args.generator != "builtin" else "builtin"
    gen_label = f"{wrk_version(wrk)} (-t1)" if gen != "builtin" else "built-in (asyncio c16, blocking socket c1)"

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        run = Run(Path(tmp))
        try:
            start_upstream(run)
            urls = {}
            for t in TARGETS:
                print(f"starting {t.name}: {t.about}", file=sys.stderr)
                urls[t.name] = t.start(run)
            rounds: dict[str, list[dict]] = {t.name: [] for t in TARGETS}
            for i in range(args.rounds):
                for t in TARGETS:
                    print(f"round {i + 1}/{args.rounds}: {t.name} at {urls[t.name]}", file=sys.stderr)
                    rounds[t.name].append(bench_target(gen, urls[t.name], args, run.tmp))
        except KeyboardInterrupt:
            print("interrupted: stopping everything", file=sys.stderr)
            return 130
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stop
            run.stop()
    doc = report(args, gen_label, {n: median_of(r) for n, r in rounds.items()})
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_upstream":
        asyncio.run(_upstream_main(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "_load":
        print(json.dumps(_load_main(json.loads(sys.argv[2]))))
    else:
        sys.exit(main())
