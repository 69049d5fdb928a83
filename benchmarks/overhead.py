#!/usr/bin/env python3
"""bridge's overhead over bare mitmdump, measured in one run on this machine.

Starts a fast local upstream, bare `mitmdump` in reverse mode and `bridge up` with one
reverse route (each in its own process), then drives the same load through each target:
requests/s at 16 keep-alive connections and p50/p99 latency at one connection. Prints a
table and bridge's ratios to mitmdump (the figure of merit: absolute numbers depend on the
machine). A report, not a test: it exits 0 whether or not the targets are met.

    python benchmarks/overhead.py [--duration 10] [--requests 2000] [--json]

Targets are measured interleaved, so that a machine shared with other work slows them
alike: the c16 load runs in slices (mitmdump, bridge, mitmdump, bridge, ...) and the c1
requests go in small blocks to each target in turn. Throughput load generator: `wrk` when
it is on PATH (--generator builtin forces the other), else a built-in asyncio one over raw
keep-alive sockets; c1 latency always uses a built-in blocking-socket client (it alone can
interleave targets and send exactly --requests). Generators run in processes of their own.
Traffic goes to 127.0.0.1 only; every process started is stopped at the end, on Ctrl-C
and on errors too. To add a configuration, add a Target to TARGETS.
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
import urllib.error
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
BUSY = 0.25  # share of all CPUs busy before the run above which the report warns


# --- the processes a run starts ----------------------------------------------------------


@dataclass
class Run:
    """Everything one benchmark run started; `stop()` ends all of it."""

    tmp: Path
    upstream_port: int = 0
    upstream_pid: int = 0
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
    run.upstream_pid = p.pid


# --- targets: (name, how to start it -> its base URL and pid, what it is) -----------------


@dataclass(frozen=True)
class Target:
    name: str
    start: Callable[[Run], tuple[str, int]]  # base URL, pid of the process doing the work
    about: str


def upstream_direct(run: Run) -> tuple[str, int]:
    return f"http://{HOST}:{run.upstream_port}", run.upstream_pid


def mitmdump(run: Run) -> tuple[str, int]:
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
    return f"http://{HOST}:{port}", p.pid


def bridge(route_extra: dict | None = None, name: str = "bridge") -> Callable[[Run], tuple[str, int]]:
    """`bridge up` with one reverse route to the upstream; `route_extra` adds route keys
    (retry, breaker, cache, ...) for the configurations later issues benchmark."""

    def start(run: Run) -> tuple[str, int]:
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

        return run.wait_for(name, p, ready), p.pid

    return start


TARGETS = [
    Target("upstream", upstream_direct, "the upstream alone: must be far above the proxies"),
    Target(BASELINE, mitmdump, "bare mitmdump, reverse mode, connection_strategy=lazy"),
    Target("bridge", bridge(), "bridge up, one reverse route, no policies"),
    Target("resilient", bridge({
        "retry": {"attempts": 3, "backoff": {"initial": "100ms", "max": "2s"}},
        "breaker": {"failure_rate": "50%", "window": 20, "min_calls": 5, "open_for": "30s"},
        "timeout": {"connect": "2s", "total": "30s"},
    }, name="resilient"), "bridge with retries and a breaker configured, none firing"),
]


# --- load generators (each measurement is its own process) -------------------------------


def wrk_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    words = (out.stdout + out.stderr).split()
    return f"wrk {words[1]}" if len(words) > 1 else "wrk"


WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"seconds":%.6f,"bad_status":%d,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def load_c16(gen: str, url: str, seconds: float, tmp: Path) -> dict:
    """`seconds` of load at 16 keep-alive connections: {requests, seconds, bad_status, errors}."""
    if gen == "builtin":
        return _generator({"mode": "c16", "url": url + PATH, "conns": 16, "seconds": seconds},
                          timeout=seconds + 30)
    script = tmp / "wrk-report.lua"
    script.write_text(WRK_DONE)
    argv = [gen, "-t1", "-c16", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), url + PATH]
    _, out, err = capture(argv, timeout=seconds + 30)
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out[-1000:]}{err[-1000:]}")
    return json.loads(line[6:])


def latency_c1(urls: dict[str, str], requests: int, block: int) -> dict[str, dict]:
    """`requests` to each target over one keep-alive connection each, one request at a
    time, `block` to one target then `block` to the next: {name: {p50_ms, p99_ms, ...}}."""
    spec = {"mode": "c1", "urls": {n: u + PATH for n, u in urls.items()},
            "requests": requests, "block": block}
    return _generator(spec, timeout=30 + requests * len(urls) * 0.05)


def _generator(spec: dict, timeout: float) -> dict:
    rc, out, err = capture([sys.executable, __file__, "_load", json.dumps(spec)], timeout)
    if rc != 0:
        raise RuntimeError(f"load generator failed: {err.strip()[-2000:]}")
    return json.loads(out)


def capture(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run a load generator to its end (killed and reaped on timeout, Ctrl-C or error)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()


def _content_length(head: bytes) -> int:
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        raise ValueError(f"response without Content-Length: {head[:200]!r}")
    end = head.find(b"\r\n", i + 2)
    return int(head[i + 17:end if end >= 0 else None])


def _request_bytes(url: str) -> tuple[str, int, bytes]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return u.hostname, u.port, f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: */*\r\n\r\n".encode()


def _load_main(spec: dict) -> dict:
    if spec["mode"] == "c1":
        return _latency(spec["urls"], spec["requests"], spec["block"])
    return asyncio.run(_throughput(*_request_bytes(spec["url"]), spec["conns"], spec["seconds"]))


class _Client:
    """One blocking keep-alive connection; `get()` -> (seconds, status line ok)."""

    def __init__(self, url: str) -> None:
        host, port, self.req = _request_bytes(url)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self) -> tuple[float, bool]:
        t0 = time.perf_counter()
        self.sock.sendall(self.req)
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                total = end + 4 + _content_length(buf[:end + 2])
                if len(buf) >= total:
                    break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the target closed the connection")
            buf += chunk
        elapsed = time.perf_counter() - t0
        self.buf = buf[total:]
        return elapsed, buf[9:12] == b"200"


def _latency(urls: dict[str, str], n: int, block: int) -> dict[str, dict]:
    clients = {name: _Client(url) for name, url in urls.items()}
    lat: dict[str, list[float]] = {name: [] for name in urls}
    bad = dict.fromkeys(urls, 0)
    for start in range(0, n, block):
        for name, client in clients.items():
            for _ in range(min(block, n - start)):
                seconds, ok = client.get()
                lat[name].append(seconds)
                bad[name] += not ok
    out = {}
    for name, values in lat.items():
        values.sort()
        out[name] = {"requests": n, "bad_status": bad[name], "p50_ms": values[(n - 1) // 2] * 1000,
                     "p99_ms": values[math.ceil(0.99 * n) - 1] * 1000}
    return out


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
    return {"requests": counts["ok"] + counts["bad"], "seconds": time.perf_counter() - started,
            "bad_status": counts["bad"], "errors": counts["errors"]}


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


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over `seconds` before anything starts (Linux), else None."""
    def sample() -> list[int]:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]

    try:
        a = sample()
        time.sleep(seconds)
        b = sample()
    except (OSError, ValueError):
        return None
    d = [y - x for x, y in zip(a, b, strict=True)]
    idle = d[3] + (d[4] if len(d) > 4 else 0)  # idle + iowait
    return 1 - idle / sum(d) if sum(d) else None


def check_answers(url: str) -> None:
    """A misrouted fast 502 would flatter every figure: the target must return the body."""
    try:
        with urllib.request.urlopen(url + PATH, timeout=5) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    if status != 200 or body != BODY:
        raise RuntimeError(f"{url}{PATH} answered {status} {body[:300]!r}, not the upstream's body")


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) the process has used so far (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure_all(gen: str, targets: dict[str, tuple[str, int]], args, tmp: Path) -> tuple[dict, dict]:
    """Warm every target up, then c16 in interleaved slices and c1 in interleaved blocks."""
    for name, (url, _) in targets.items():
        check_answers(url)
        print(f"warming up {name} at {url}", file=sys.stderr)
        load_c16(gen, url, args.warmup, tmp)
    slices = {name: [] for name in targets}
    for i in range(args.slices):
        print(f"c16 slice {i + 1}/{args.slices}", file=sys.stderr)
        for name, (url, pid) in targets.items():
            before = cpu_seconds(pid)
            r = load_c16(gen, url, args.duration / args.slices, tmp)
            after = cpu_seconds(pid)
            r["cpu_s"] = None if before is None or after is None else after - before
            slices[name].append(r)
    print(f"c1: {args.requests} requests to each target, interleaved", file=sys.stderr)
    return slices, latency_c1({n: u for n, (u, _) in targets.items()}, args.requests, block=50)


def report(args, gen_label: str, slices: dict[str, list[dict]], lat: dict[str, dict],
           busy: float | None) -> dict:
    def rate(rs: list[dict]) -> float:
        return sum(r["requests"] for r in rs) / sum(r["seconds"] for r in rs)

    def cpu_ms(rs: list[dict]) -> float | None:  # CPU the target's process spent per request
        if any(r["cpu_s"] is None for r in rs):
            return None
        return 1000 * sum(r["cpu_s"] for r in rs) / max(1, sum(r["requests"] for r in rs))

    targets = [{"name": name, "rps_c16": round(rate(rs), 1),
                "cpu_ms_per_request_c16": None if cpu_ms(rs) is None else round(cpu_ms(rs), 3),
                "p50_ms_c1": round(lat[name]["p50_ms"], 3), "p99_ms_c1": round(lat[name]["p99_ms"], 3),
                "bad_status": sum(r["bad_status"] for r in rs) + lat[name]["bad_status"],
                "errors": sum(r["errors"] for r in rs)} for name, rs in slices.items()]
    base = slices[BASELINE]
    comparisons = []
    for name, rs in slices.items():
        if name in ("upstream", BASELINE):
            continue
        ratio = rate(rs) / rate(base)
        delta = lat[name]["p50_ms"] - lat[BASELINE]["p50_ms"]
        comparisons.append({
            "target": name, "baseline": BASELINE,
            "throughput_ratio": round(ratio, 3), "throughput_target": TARGET_THROUGHPUT_RATIO,
            "throughput_pass": ratio >= TARGET_THROUGHPUT_RATIO,
            # each slice against the baseline's slice of the same round: the spread within the run
            "throughput_ratio_slices": [round(rate([r]) / rate([b]), 3) for r, b in zip(rs, base, strict=True)],
            "p50_delta_ms": round(delta, 3), "p50_delta_target_ms": TARGET_P50_DELTA_MS,
            "p50_pass": delta <= TARGET_P50_DELTA_MS,
            # CPU per request, target over baseline: steadier than req/s when other work
            # takes CPU time from the proxies (informational, no target)
            "cpu_per_request_ratio": None if cpu_ms(rs) is None or not cpu_ms(base)
            else round(cpu_ms(rs) / cpu_ms(base), 3)})
    by_name = {t["name"]: t for t in targets}
    fastest_proxy = max(t["rps_c16"] for t in targets if t["name"] != "upstream")
    return {
        "generator": gen_label, "cpus": os.cpu_count(), "python": platform.python_version(),
        "cpu_busy_before": None if busy is None else round(busy, 2), "duration_s": args.duration,
        "slices": args.slices, "latency_requests": args.requests,
        "note": "absolute numbers are machine-bound; the ratios are the figure of merit",
        "upstream_headroom": round(by_name["upstream"]["rps_c16"] / fastest_proxy, 1),
        "targets": targets,
        "comparisons": comparisons,
    }


def print_table(doc: dict) -> None:
    print(f"\nbridge overhead benchmark: {doc['cpus']} CPU(s), Python {doc['python']}; "
          f"c16: {doc['generator']}, {doc['duration_s']:g} s per target in {doc['slices']} "
          f"interleaved slices; c1: {doc['latency_requests']} requests per target, interleaved")
    print("absolute numbers are machine-bound: the ratios below are the figure of merit\n")
    print(f"{'target':<12}{'req/s @c16':>12}{'CPU ms/req':>12}{'p50 ms @c1':>12}{'p99 ms @c1':>12}")
    for t in doc["targets"]:
        bad = t["bad_status"] or t["errors"]
        flag = f"  (non-200: {t['bad_status']}, errors: {t['errors']})" if bad else ""
        cpu = "-" if t["cpu_ms_per_request_c16"] is None else f"{t['cpu_ms_per_request_c16']:.3f}"
        print(f"{t['name']:<12}{t['rps_c16']:>12,.0f}{cpu:>12}{t['p50_ms_c1']:>12.3f}"
              f"{t['p99_ms_c1']:>12.3f}{flag}")
    if (doc["cpu_busy_before"] or 0) > BUSY:
        print(f"\nwarning: {doc['cpu_busy_before']:.0%} of the CPUs were busy with other work before "
              "the run: figures are noisier (the interleaving keeps the comparison paired)")
    if doc["upstream_headroom"] < HEADROOM:
        print(f"\nwarning: the upstream alone is only {doc['upstream_headroom']}x the fastest proxy; "
              "it may be limiting the proxies' figures")
    print()
    for c in doc["comparisons"]:
        sl = c["throughput_ratio_slices"]
        print(f"{c['target']} / {c['baseline']} throughput: {c['throughput_ratio']:.3f}  "
              f"(target >= {c['throughput_target']:.2f})  {'PASS' if c['throughput_pass'] else 'MISS'}"
              f"   slices {min(sl):.2f}..{max(sl):.2f}")
        print(f"{c['target']} - {c['baseline']} p50:        {c['p50_delta_ms']:+.3f} ms  "
              f"(target <= +{c['p50_delta_target_ms']:.1f} ms)  {'PASS' if c['p50_pass'] else 'MISS'}")
        if c["cpu_per_request_ratio"] is not None:
            print(f"{c['target']} / {c['baseline']} CPU per request: {c['cpu_per_request_ratio']:.3f}"
                  "  (informational: steadier than req/s on a busy machine)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of c16 load per target (default 10)")
    ap.add_argument("--requests", type=int, default=2000, help="c1 requests per target (default 2000)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of c16 load before measuring (default 2)")
    ap.add_argument("--slices", type=int, default=5, help="c16 load per target in N interleaved slices (default 5)")
    ap.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                    help="c16 load generator (default: wrk when on PATH)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.requests < 100 or args.warmup < 1 or args.slices < 1 or args.duration < args.slices:
        ap.error("need --requests >= 100, --warmup >= 1, --slices >= 1, --duration >= --slices")

    wrk = shutil.which("wrk")
    if args.generator == "wrk" and not wrk:
        ap.error("--generator wrk: wrk is not on PATH")
    gen = wrk if wrk and args.generator != "builtin" else "builtin"
    gen_label = f"{wrk_version(wrk)} -t1" if gen != "builtin" else "built-in asyncio generator"

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    busy = cpu_busy()
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        run = Run(Path(tmp))
        try:
            start_upstream(run)
            targets = {}
            for t in TARGETS:
                print(f"starting {t.name}: {t.about}", file=sys.stderr)
                targets[t.name] = t.start(run)
            slices, lat = measure_all(gen, targets, args, run.tmp)
        except KeyboardInterrupt:
            print("interrupted: stopping everything", file=sys.stderr)
            return 130
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stop
            run.stop()
    doc = report(args, gen_label, slices, lat, busy)
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
