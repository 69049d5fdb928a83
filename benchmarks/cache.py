#!/usr/bin/env python3
"""Response cache: hits through `bridge up` versus bare mitmdump, and the store at 100k entries.

Part 1, throughput. Starts a fast local upstream (its own process, one small JSON body),
bare `mitmdump` in reverse mode to it, and `bridge up` with one reverse route to the same
upstream with `cache: {ttl: 1h}`. One request warms bridge's cache; from then on every
request bridge gets is a hit, answered without any upstream connection, while mitmdump
forwards each one. Both get the same load in the same run: requests/s at 16 keep-alive
connections (interleaved slices: mitmdump, bridge, mitmdump, ...) and p50/p99 at one
connection (interleaved blocks). Target: hits >= 1.1x bare pass-through. The report also
checks, through the control API, that bridge answered the measured requests from the cache.

Part 2, the store. Fills an EntryStore (store/responses.py, the cache's own diskcache
directory) with --entries entries (default 100,000; written in transactions of 1,000 so
filling stays quick) in a temporary directory, then times --lookups random lookups of
stored keys and of absent keys. Target: p99 < 1 ms. Then writes --overfill times
--size-limit bytes of entries (1 KB, 8 KB and 40 KB bodies in turn, a "hot" entry read
after each write) into a store of --size-limit (default 8 MB) and reports the size it
keeps: diskcache's accounted volume (database pages + value files), which the limit bounds,
and the whole directory on disk, which adds SQLite's write-ahead log (up to about 4 MB, its
auto-checkpoint size, whatever the limit). Checks that the hot entry survived (LRU) and the
first ones were evicted.

    .venv/bin/python benchmarks/cache.py [--duration 8] [--entries 100000] [--json]
    .venv/bin/python benchmarks/cache.py --skip-store      # part 1 only
    .venv/bin/python benchmarks/cache.py --skip-throughput --entries 20000

A report, not a test: it exits 0 whether or not the targets are met. Traffic stays on
127.0.0.1; every process started is stopped at the end, on Ctrl-C and on errors too.
Absolute numbers are machine-bound; the ratio taken in one run is the figure of merit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# The plumbing the benchmarks share (_harness.py: processes; _loadgen.py: load generators).
from _harness import _signal_group, accepts, free_port  # noqa: E402
from _loadgen import WRK_DONE, _content_length, _request_bytes  # noqa: E402

HOST = "127.0.0.1"
PATH = "/v1/models/bench"
BODY = (b'{"id":"gpt-bench","object":"model","created":1715367049,"owned_by":"system",'
        b'"permission":[],"root":"gpt-bench","parent":null}')
TARGET_RATIO = 1.10  # cache hits through bridge / bare mitmdump pass-through, req/s at c16
TARGET_LOOKUP_P99_MS = 1.0
START_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parent.parent


# --- processes ------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run started; stop() ends all of it."""

    tmp: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.tmp / f"{name}.log", "wb") as log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.append((name, p))
        return p

    def wait_for(self, name: str, p: subprocess.Popen, ready):
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
        for _, p in reversed(self.procs):
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(5)
        self.procs.clear()


def start_upstream(run: Run) -> int:
    port_file = run.tmp / "upstream.port"
    p = run.spawn("upstream", [sys.executable, __file__, "_upstream", str(port_file)])
    return run.wait_for("upstream", p, lambda: int(port_file.read_text()))


def start_mitmdump(run: Run, upstream: int) -> str:
    exe = Path(sys.executable).parent / "mitmdump"
    exe = str(exe) if exe.exists() else shutil.which("mitmdump")
    if not exe:
        raise RuntimeError("mitmdump not found next to this Python nor on PATH")
    port = free_port()
    confdir = run.tmp / "mitmdump-conf"
    confdir.mkdir()
    p = run.spawn("mitmdump", [
        exe, "-q", "--mode", f"reverse:http://{HOST}:{upstream}@{HOST}:{port}",
        "--set", "connection_strategy=lazy", "--set", f"confdir={confdir}"])
    run.wait_for("mitmdump", p, lambda: accepts(port))
    return f"http://{HOST}:{port}"


def start_bridge(run: Run, upstream: int, name: str, cache: dict | None) -> tuple[str, dict]:
    """`bridge up -q` with one reverse route (cached when `cache`); (its URL, control.json)."""
    home = run.tmp / f"{name}-home"
    home.mkdir(mode=0o700)
    route = {"name": "bench", "listen": f"{HOST}:0",
             "upstreams": [{"name": "up", "url": f"http://{HOST}:{upstream}"}]}
    if cache is not None:
        route["cache"] = cache
    config = run.tmp / f"{name}.yaml"  # JSON is YAML
    config.write_text(json.dumps({"version": 2, "control": {"listen": f"{HOST}:0"},
                                  "routes": [route]}))
    p = run.spawn(name, [sys.executable, "-m", "bridge_cli", "up", "-q", "-c", str(config)],
                  env={"BRIDGE_HOME": str(home), "PYTHONPATH": str(ROOT)})

    def ready():
        control = json.loads((home / "control.json").read_text())
        status = control_get(control, "/api/v1/status")
        url = next((f"http://{x['address']}" for x in status["listeners"] if x["name"] == "bench"), None)
        return (url, control) if url else None

    return run.wait_for(name, p, ready)


def control_get(control: dict, path: str) -> dict:
    req = urllib.request.Request(control["url"] + path,
                                 headers={"Authorization": f"Bearer {control['token']}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def fetch(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


# --- load generators (each run in a process of its own) --------------------------------------


def load_c16(gen: str, url: str, seconds: float, tmp: Path) -> dict:
    if gen == "builtin":
        return _generator({"mode": "c16", "url": url + PATH, "conns": 16, "seconds": seconds},
                          timeout=seconds + 30)
    script = tmp / "wrk-report.lua"
    script.write_text(WRK_DONE)
    out = subprocess.run([gen, "-t1", "-c16", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                          "-s", str(script), url + PATH], capture_output=True, text=True,
                         timeout=seconds + 30)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]}{out.stderr[-1000:]}")
    return json.loads(line[6:])


def latency_c1(urls: dict[str, str], requests: int, block: int = 50) -> dict[str, dict]:
    spec = {"mode": "c1", "urls": {n: u + PATH for n, u in urls.items()}, "requests": requests,
            "block": block}
    return _generator(spec, timeout=30 + requests * len(urls) * 0.05)


def _generator(spec: dict, timeout: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "_load", json.dumps(spec)],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


class _Client:
    """One blocking keep-alive connection."""

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
    return {name: {"requests": n, "bad_status": bad[name], **percentiles(v)}
            for name, v in lat.items()}


async def _throughput(host: str, port: int, req: bytes, conns: int, seconds: float) -> dict:
    counts = {"ok": 0, "bad": 0, "errors": 0}
    streams = [await asyncio.open_connection(host, port) for _ in range(conns)]
    deadline = time.perf_counter() + seconds

    async def drive(reader, writer) -> None:
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


def _load_main(spec: dict) -> dict:
    if spec["mode"] == "c1":
        return _latency(spec["urls"], spec["requests"], spec["block"])
    return asyncio.run(_throughput(*_request_bytes(spec["url"]), spec["conns"], spec["seconds"]))


# --- the upstream: a minimal keep-alive HTTP/1.1 server, one fixed JSON answer ---------------


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


# --- part 1: cache hits versus pass-through ---------------------------------------------------


def rate(rs: list[dict]) -> float:
    return sum(r["requests"] for r in rs) / sum(r["seconds"] for r in rs)


def throughput_part(args, run: Run, gen: str, gen_label: str) -> dict:
    upstream = start_upstream(run)
    print("starting mitmdump (bare reverse pass-through)", file=sys.stderr)
    mitm = start_mitmdump(run, upstream)
    print("starting bridge up (one route, cache: {ttl: 1h})", file=sys.stderr)
    bridge, control = start_bridge(run, upstream, "bridge-hit", {"ttl": "1h"})
    urls = {"mitmdump": mitm, "bridge-hit": bridge}
    if args.bridge_pass:
        print("starting bridge up (one route, no cache: bridge's own pass-through)", file=sys.stderr)
        urls["bridge-pass"], _ = start_bridge(run, upstream, "bridge-pass", None)
        status, body, _ = fetch(urls["bridge-pass"] + PATH)
        if (status, body) != (200, BODY):
            raise RuntimeError(f"bridge (no cache) answered {status} {body[:200]!r}")

    status, body, _ = fetch(mitm + PATH)
    if (status, body) != (200, BODY):
        raise RuntimeError(f"mitmdump answered {status} {body[:200]!r}, not the upstream's body")
    first = fetch(bridge + PATH)
    second = fetch(bridge + PATH)
    if (first[0], first[1], first[2].get("x-bridge-cache")) != (200, BODY, "miss"):
        raise RuntimeError(f"bridge's first answer: {first[0]} {first[2].get('x-bridge-cache')} {first[1][:200]!r}")
    if (second[0], second[1], second[2].get("x-bridge-cache")) != (200, BODY, "hit"):
        raise RuntimeError(f"bridge's second answer was not a hit: {second[0]} "
                           f"{second[2].get('x-bridge-cache')} {second[1][:200]!r}")

    for name, url in urls.items():
        print(f"warming up {name}", file=sys.stderr)
        load_c16(gen, url, args.warmup, run.tmp)
    slices: dict[str, list[dict]] = {name: [] for name in urls}
    for i in range(args.slices):
        print(f"c16 slice {i + 1}/{args.slices}", file=sys.stderr)
        for name, url in urls.items():
            slices[name].append(load_c16(gen, url, args.duration / args.slices, run.tmp))
    print(f"c1: {args.requests} requests to each, interleaved", file=sys.stderr)
    lat = latency_c1(urls, args.requests)
    counts = control_get(control, "/api/v1/status")["routes"][0]["cache"]

    ratio = rate(slices["bridge-hit"]) / rate(slices["mitmdump"])
    vs_pass = (round(rate(slices["bridge-hit"]) / rate(slices["bridge-pass"]), 3)
               if "bridge-pass" in slices else None)
    targets = [{"name": name, "rps_c16": round(rate(rs), 1),
                "p50_ms_c1": round(lat[name]["p50_ms"], 3), "p99_ms_c1": round(lat[name]["p99_ms"], 3),
                "bad_status": sum(r["bad_status"] for r in rs) + lat[name]["bad_status"],
                "errors": sum(r["errors"] for r in rs)} for name, rs in slices.items()]
    return {
        "generator": gen_label, "duration_s": args.duration, "slices": args.slices,
        "latency_requests": args.requests, "targets": targets,
        "bridge_cache_counts": counts,  # from the control API: every measured request a hit
        "all_hits": counts.get("miss", 0) == 1 and counts.get("hit", 0) > 0,
        "ratio": round(ratio, 3),
        "ratio_slices": [round(rate([h]) / rate([m]), 3)
                         for h, m in zip(slices["bridge-hit"], slices["mitmdump"], strict=True)],
        "target_ratio": TARGET_RATIO, "pass": ratio >= TARGET_RATIO,
        "hits_vs_bridge_pass_through": vs_pass,
    }


# --- part 2: the store -----------------------------------------------------------------------


def percentiles(seconds: list[float]) -> dict:
    v = sorted(seconds)
    n = len(v)
    return {"p50_ms": v[(n - 1) // 2] * 1000, "p99_ms": v[math.ceil(0.99 * n) - 1] * 1000,
            "max_ms": v[-1] * 1000}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def store_part(args, tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from bridge_cli.common.entry import make_entry
    from bridge_cli.config.model import Cache
    from bridge_cli.engine.cache import RequestView, key_of, key_parts
    from bridge_cli.store.responses import EntryStore

    cache = Cache()
    rng = random.Random(1)
    headers = [("content-type", "application/json"), ("x-request-id", "req_0123456789")]

    def entry(i: int, body: bytes):
        parts = key_parts(RequestView("bench", "GET", f"/v1/items/{i}", (("page", "1"),), {}, b""), cache)
        return key_of(parts), make_entry(200, headers, body, time.time(), parts, "bench")

    # 2a: N entries, then lookups
    store = EntryStore(tmp / "store-100k")
    print(f"store: writing {args.entries:,} entries", file=sys.stderr)
    keys = []
    t0 = time.perf_counter()
    for start in range(0, args.entries, 1000):
        # One transaction per 1,000 puts (the bridge writes one at a time, off its event loop).
        with store.store._cache.transact():
            for i in range(start, min(start + 1000, args.entries)):
                body = b'{"id":"item-%d","object":"item","data":"%s"}' % (i, b"x" * rng.randrange(200, 800))
                k, e = entry(i, body)
                store.put(k, e, None)
                keys.append(k)
    fill_s = time.perf_counter() - t0
    store.close()  # reopen: lookups on a store as a restarted bridge finds it
    store = EntryStore(tmp / "store-100k")
    print(f"store: {args.lookups:,} lookups", file=sys.stderr)
    hit_t, miss_t = [], []
    for k in rng.sample(keys, min(args.lookups, len(keys))):
        t = time.perf_counter()
        found = store.get(k)
        hit_t.append(time.perf_counter() - t)
        if found is None:
            raise RuntimeError("a stored entry was not found")
    for i in range(max(1, args.lookups // 10)):
        t = time.perf_counter()
        found = store.get(f"{i:064x}")
        miss_t.append(time.perf_counter() - t)
        if found is not None:
            raise RuntimeError("an absent key was found")
    on_disk = dir_bytes(tmp / "store-100k")
    store.close()
    # Diagnostic: the same files and keys read without LRU bookkeeping. An LRU get also
    # writes the entry's access time (a write transaction, WAL checkpoints now and then).
    from bridge_cli.store.disk import DiskStore

    plain = DiskStore(tmp / "store-100k", eviction_policy="least-recently-stored")
    plain_t = []
    for k in rng.sample(keys, min(args.lookups, len(keys))):
        t = time.perf_counter()
        plain.get(f"entry:{k}")
        plain_t.append(time.perf_counter() - t)
    plain.close()
    shutil.rmtree(tmp / "store-100k", ignore_errors=True)
    hits, misses = percentiles(hit_t), percentiles(miss_t)

    # 2b: a small size limit, overfilled
    limit = args.size_limit
    bounded_dir = tmp / "store-bounded"
    bounded = EntryStore(bounded_dir, size_limit=limit)
    sizes = (1_000, 8_000, 40_000)
    written = peak = n = 0
    order, hot, hot_kept = [], None, True
    print(f"store: writing {args.overfill}x a {limit / 2**20:g} MB limit", file=sys.stderr)
    while written < args.overfill * limit:
        k, e = entry(n, os.urandom(sizes[n % 3] // 2).hex().encode())
        bounded.put(k, e, None)
        written += len(json.dumps(e.to_json()))
        order.append(k)
        hot = hot or k
        if bounded.get(hot) is None:  # read after every write: LRU must keep it
            hot_kept = False
        bounded.flush_touches()  # the proxy records reads in batches like this
        n += 1
        if n % 25 == 0:
            peak = max(peak, dir_bytes(bounded_dir))
    volume = bounded.store._cache.volume()  # diskcache's own account: what size_limit bounds
    total = dir_bytes(bounded_dir)
    peak = max(peak, total)
    wal = sum(p.stat().st_size for p in bounded_dir.glob("cache.db-*"))
    servable = [k for k in order if bounded.get(k) is not None]
    listed = {k for k, _ in bounded.summaries()}
    oldest_evicted = bounded.get(order[1]) is None
    bounded.close()
    return {
        "entries": args.entries, "fill_s": round(fill_s, 1),
        "fill_per_s": round(args.entries / fill_s), "bytes_on_disk": on_disk,
        "lookup_hit": {k: round(v, 4) for k, v in hits.items()},
        "lookup_absent": {k: round(v, 4) for k, v in misses.items()},
        "lookup_hit_without_lru_update": {k: round(v, 4) for k, v in percentiles(plain_t).items()},
        "target_p99_ms": TARGET_LOOKUP_P99_MS,
        "lookup_pass": max(hits["p99_ms"], misses["p99_ms"]) < TARGET_LOOKUP_P99_MS,
        "bound": {
            "size_limit": limit, "written": written, "writes": n,
            "volume": volume, "directory": total, "directory_peak": peak, "wal_and_shm": wal,
            "entries_kept": len(servable), "hot_kept": hot_kept, "oldest_evicted": oldest_evicted,
            # entries that still answer but that `bridge cache ls/clear` no longer see
            "unlisted_servable": len([k for k in servable if k not in listed]),
            "pass": volume <= limit and oldest_evicted and hot_kept,
        },
    }


# --- report ----------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB"


def print_report(doc: dict) -> None:
    print(f"\nbridge cache benchmark: {doc['cpus']} CPU(s), Python {doc['python']}")
    t = doc.get("throughput")
    if t:
        print(f"\n1. cache hits vs bare pass-through (c16: {t['generator']}, {t['duration_s']:g} s per "
              f"target in {t['slices']} interleaved slices; c1: {t['latency_requests']} requests each)")
        print(f"   {'target':<12}{'req/s @c16':>12}{'p50 ms @c1':>12}{'p99 ms @c1':>12}")
        for x in t["targets"]:
            flag = f"  (non-200: {x['bad_status']}, errors: {x['errors']})" if x["bad_status"] or x["errors"] else ""
            print(f"   {x['name']:<12}{x['rps_c16']:>12,.0f}{x['p50_ms_c1']:>12.3f}{x['p99_ms_c1']:>12.3f}{flag}")
        c = t["bridge_cache_counts"]
        print(f"   bridge answered {c.get('hit', 0):,} hit(s), {c.get('miss', 0)} miss(es)"
              + ("" if t["all_hits"] else "  WARNING: not every measured request was a hit"))
        sl = t["ratio_slices"]
        print(f"   hits / pass-through: {t['ratio']:.2f}x  (target >= {t['target_ratio']:.1f}x)  "
              f"{'PASS' if t['pass'] else 'MISS'}   slices {min(sl):.2f}..{max(sl):.2f}")
        if t["hits_vs_bridge_pass_through"] is not None:
            print(f"   hits / bridge's own pass-through (no cache): {t['hits_vs_bridge_pass_through']:.2f}x")
    s = doc.get("store")
    if s:
        h, a, b = s["lookup_hit"], s["lookup_absent"], s["bound"]
        print(f"\n2. EntryStore with {s['entries']:,} entries ({mb(s['bytes_on_disk'])} on disk, "
              f"filled in {s['fill_s']:g} s, {s['fill_per_s']:,}/s)")
        print(f"   lookup of a stored key   p50 {h['p50_ms']:.3f} ms   p99 {h['p99_ms']:.3f} ms   "
              f"max {h['max_ms']:.3f} ms")
        print(f"   lookup of an absent key  p50 {a['p50_ms']:.3f} ms   p99 {a['p99_ms']:.3f} ms   "
              f"max {a['max_ms']:.3f} ms")
        print(f"   target p99 < {s['target_p99_ms']:g} ms: {'PASS' if s['lookup_pass'] else 'MISS'}")
        d = s["lookup_hit_without_lru_update"]
        print(f"   diagnostic: the same lookups without LRU bookkeeping (least-recently-stored) "
              f"p50 {d['p50_ms']:.3f} ms   p99 {d['p99_ms']:.3f} ms")
        print(f"   size_limit {mb(b['size_limit'])}, {mb(b['written'])} written in {b['writes']:,} entries: "
              f"{b['entries_kept']} kept; hot entry kept: {b['hot_kept']}; oldest evicted: {b['oldest_evicted']}")
        print(f"   accounted volume {mb(b['volume'])} (bound: <= size_limit)  "
              f"{'PASS' if b['pass'] else 'MISS'}")
        print(f"   directory on disk {mb(b['directory'])} (peak {mb(b['directory_peak'])}), of which "
              f"SQLite WAL/shm {mb(b['wal_and_shm'])}, which the limit does not count")
        if b["unlisted_servable"]:
            print(f"   note: {b['unlisted_servable']} entries still answer but have lost their "
                  "summary (invisible to `bridge cache ls/clear`)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of c16 load per target (default 8)")
    ap.add_argument("--slices", type=int, default=4, help="c16 load in N interleaved slices (default 4)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of c16 load before measuring (default 2)")
    ap.add_argument("--requests", type=int, default=2000, help="c1 requests per target (default 2000)")
    ap.add_argument("--no-bridge-pass", dest="bridge_pass", action="store_false",
                    help="skip the third target, bridge without a cache (context for the ratio)")
    ap.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                    help="c16 load generator (default: wrk when on PATH)")
    ap.add_argument("--entries", type=int, default=100_000, help="entries in the store (default 100000)")
    ap.add_argument("--lookups", type=int, default=20_000, help="timed lookups (default 20000)")
    ap.add_argument("--size-limit", type=int, default=8 * 2**20, help="bytes, the bounded store (default 8 MB)")
    ap.add_argument("--overfill", type=float, default=4.0, help="write this many times --size-limit (default 4)")
    ap.add_argument("--skip-throughput", action="store_true", help="only part 2")
    ap.add_argument("--skip-store", action="store_true", help="only part 1")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.requests < 100 or args.slices < 1 or args.duration < args.slices or args.entries < 1000:
        ap.error("need --requests >= 100, --slices >= 1, --duration >= --slices, --entries >= 1000")
    wrk = shutil.which("wrk")
    if args.generator == "wrk" and not wrk:
        ap.error("--generator wrk: wrk is not on PATH")
    gen = wrk if wrk and args.generator != "builtin" else "builtin"
    gen_label = "wrk -t1" if gen != "builtin" else "built-in asyncio generator"

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    doc: dict = {"benchmark": "cache", "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="bridge-cache-bench-") as tmp:
        run = Run(Path(tmp))
        try:
            if not args.skip_throughput:
                doc["throughput"] = throughput_part(args, run, gen, gen_label)
                run.stop()  # part 2 runs with nothing else busy
            if not args.skip_store:
                doc["store"] = store_part(args, Path(tmp))
        except KeyboardInterrupt:
            print("interrupted: stopping everything", file=sys.stderr)
            return 130
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            run.stop()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_report(doc)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_upstream":
        asyncio.run(_upstream_main(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "_load":
        print(json.dumps(_load_main(json.loads(sys.argv[2]))))
    else:
        sys.exit(main())
