"""Pieces the small benchmarks share (failfast.py, chaos.py): a keep-alive client cheap
enough not to blur sub-millisecond figures, percentiles, and `bridge up` as a subprocess.
Not a benchmark itself: `./dev bench` skips files starting with `_`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class KeepAliveClient:
    """A minimal HTTP/1.1 client on one socket; `get` returns (status, lower-case head)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path: str) -> tuple[int, str]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                      if k.lower() == "content-length")
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        self.buf = self.buf[length:]
        return int(lines[0].split()[1]), text.lower()


def pct(data: list[float], q: float) -> float:
    """The q-quantile (0..1) of `data`, nearest rank."""
    data = sorted(data)
    return data[min(len(data) - 1, int(q * len(data)))]


def control(home: Path, method: str, path: str, body: dict | None = None) -> dict:
    """Call the control API of the bridge whose $BRIDGE_HOME is `home`."""
    info = json.loads((home / "control.json").read_text())
    req = urllib.request.Request(info["url"] + "/api/v1/" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {info['token']}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def start_bridge(tmp: Path, config_text: str, *args: str) -> tuple[subprocess.Popen, Path, int]:
    """`bridge up -q -c CONFIG ARGS` with its own $BRIDGE_HOME under `tmp`; returns the
    process, that home and the port of the first route's listener once it serves."""
    home = tmp / "home"
    cfg = tmp / "bridge.yaml"
    cfg.write_text(config_text)
    proc = subprocess.Popen([sys.executable, "-m", "bridge_cli", "up", "-q", "-c", str(cfg), *args],
                            env={**os.environ, "BRIDGE_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status = control(home, "GET", "status")
            return proc, home, int(status["listeners"][0]["address"].rsplit(":", 1)[1])
        except (OSError, ValueError, KeyError, IndexError):
            if proc.poll() is not None:
                raise SystemExit(f"bridge up exited with status {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("bridge did not start within 30 s")


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C, then kill if it lingers."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
