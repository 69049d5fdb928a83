"""Load generators the benchmarks share (not a benchmark itself: `./dev bench` skips
files starting with `_`). Each measurement runs in a process of its own, so that its CPU
never shares a GIL with anything measured.

A load is `{"path": "/v1/bench"}` (GET, the same bytes every time) or
`{"path": "/v1/chat/completions", "llm": true}` (POST, a chat-completion body that no other
request of the run repeats: _llm.chat_body, or _llm.wrk_lua for wrk).

- `load_c16`: `seconds` of load at 16 keep-alive connections, each sending its next
  request as soon as the last answer arrived: `wrk -t1` or a built-in asyncio client.
- `latency_c1`: `requests` requests to each target, one at a time over one keep-alive
  connection each, in blocks to one target then the next: p50/p99.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _llm  # noqa: E402

GET_LOAD = {"path": "/v1/bench"}
# An OpenAI client always sends a key; the proxies pass it on (LiteLLM checks it).
LLM_LOAD = {"path": _llm.LLM_PATH, "llm": True, "headers": {"Authorization": "Bearer sk-bench-dummy"}}

WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"seconds":%.6f,"bad_status":%d,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    words = (out.stdout + out.stderr).split()
    return f"wrk {words[1]}" if len(words) > 1 else "wrk"


def load_c16(gen: str, url: str, seconds: float, tmp: Path, load: dict = GET_LOAD) -> dict:
    """`seconds` of load at 16 keep-alive connections: {requests, seconds, bad_status, errors}."""
    if gen == "builtin":
        return _generator({"mode": "c16", "url": url, "load": load, "conns": 16,
                           "seconds": seconds}, timeout=seconds + 30)
    script = tmp / "wrk-report.lua"
    lua = _llm.wrk_lua(os.urandom(6).hex(), load["path"], load.get("headers")) if load.get("llm") else ""
    script.write_text(lua + WRK_DONE)
    argv = [gen, "-t1", "-c16", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), url + load["path"]]
    _, out, err = capture(argv, timeout=seconds + 30)
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out[-1000:]}{err[-1000:]}")
    return json.loads(line[6:])


def latency_c1(urls: dict[str, str], requests: int, block: int, load: dict = GET_LOAD) -> dict[str, dict]:
    """`requests` to each target over one keep-alive connection each, one request at a
    time, `block` to one target then `block` to the next: {name: {p50_ms, p99_ms, ...}}."""
    spec = {"mode": "c1", "urls": urls, "load": load, "requests": requests, "block": block}
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
    """(host, port, a GET of the URL's path) for a fixed-request client."""
    u = urlsplit(url)
    return u.hostname, u.port, f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: */*\r\n\r\n".encode()


def request_maker(base: str, load: dict, tag: str) -> tuple[str, int, Callable[[], bytes]]:
    """(host, port, a function returning the next request's bytes) for `load` on `base`."""
    host, port, fixed = _request_bytes(base + load["path"])
    if not load.get("llm"):
        return host, port, lambda: fixed
    extra = "".join(f"{k}: {v}\r\n" for k, v in load.get("headers", {}).items())
    head = (f"POST {load['path']} HTTP/1.1\r\nHost: {urlsplit(base).netloc}\r\nAccept: */*\r\n"
            f"{extra}Content-Type: application/json\r\nContent-Length: ").encode()
    counter = itertools.count(1)

    def make() -> bytes:
        body = _llm.chat_body(tag, next(counter))
        return b"%s%d\r\n\r\n%s" % (head, len(body), body)

    return host, port, make


class _Client:
    """One blocking keep-alive connection; `get()` -> (seconds, status line ok)."""

    def __init__(self, base: str, load: dict, tag: str) -> None:
        host, port, self.make = request_maker(base, load, tag)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.bad_sample: str | None = None

    def get(self) -> tuple[float, bool]:
        req = self.make()
        t0 = time.perf_counter()
        self.sock.sendall(req)
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
        self.buf, ok = buf[total:], buf[9:12] == b"200"
        if not ok:
            self.bad_sample = bad_sample(buf[:total])
        return elapsed, ok


def _latency(urls: dict[str, str], load: dict, n: int, block: int) -> dict[str, dict]:
    tag = os.urandom(6).hex()
    clients = {name: _Client(url, load, f"{tag}-{i}") for i, (name, url) in enumerate(urls.items())}
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
                     "p99_ms": values[math.ceil(0.99 * n) - 1] * 1000,
                     "bad_sample": clients[name].bad_sample}
    return out


async def _throughput(base: str, load: dict, conns: int, seconds: float) -> dict:
    """`conns` keep-alive connections, each sending its next request as soon as the last ends."""
    host, port, make = request_maker(base, load, os.urandom(6).hex())
    counts = {"ok": 0, "bad": 0, "errors": 0}
    sample: list[str] = []
    streams = [await asyncio.open_connection(host, port) for _ in range(conns)]
    deadline = time.perf_counter() + seconds

    async def drive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while time.perf_counter() < deadline:
                writer.write(make())
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(_content_length(head[:-2]))
                ok = head[9:12] == b"200"
                counts["ok" if ok else "bad"] += 1
                if not ok and not sample:
                    sample.append(bad_sample(head + body))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counts["errors"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(drive(r, w) for r, w in streams)), seconds + 20)
    return {"requests": counts["ok"] + counts["bad"], "seconds": time.perf_counter() - started,
            "bad_status": counts["bad"], "errors": counts["errors"],
            "bad_sample": sample[0] if sample else None}


def bad_sample(response: bytes) -> str:
    """A non-200 answer in short: its status line, bridge's error header and body start."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    error = [x for x in lines[1:] if x.lower().startswith("x-bridge-error:")]
    return " ".join([lines[0], *error, body[:160].decode("utf-8", "replace")])


def _load_main(spec: dict) -> dict:
    if spec["mode"] == "c1":
        return _latency(spec["urls"], spec["load"], spec["requests"], spec["block"])
    return asyncio.run(_throughput(spec["url"], spec["load"], spec["conns"], spec["seconds"]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_load":
        print(json.dumps(_load_main(json.loads(sys.argv[2]))))
    else:
        sys.exit(__doc__)
