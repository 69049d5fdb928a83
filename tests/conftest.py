"""Shared fixtures: real upstream servers and a real bridge, both on loopback.

Both run on event loops in background threads, so tests drive them with ordinary
blocking clients (httpx, the openai SDK) exactly as an app would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bridge_cli.config.loader import load_config

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` blocks until the coroutine ends."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """A scripted HTTP server on 127.0.0.1 that records every call it gets."""

    lt: LoopThread
    handlers: dict[str, Handler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    ssl_context: object = None  # an ssl.SSLContext makes this an HTTPS upstream
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def on(self, path: str, handler: Handler) -> None:
        """Serve `path` (exact, without query) with `handler`."""
        self.handlers[path] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append(Call(request.method, request.path_qs, dict(request.headers), body))
        handler = self.handlers.get(request.path)
        if handler is not None:
            return await handler(request)
        return web.json_response({
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body": body.decode("utf-8", "replace"),
        })

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()


@pytest.fixture
def upstream_factory():
    """Start any number of scripted upstreams; all stop at the end of the test."""
    lt = LoopThread("upstreams")
    started: list[Upstream] = []

    def make(ssl_context=None) -> Upstream:
        up = Upstream(lt, ssl_context=ssl_context)
        lt.run(up._start())
        started.append(up)
        return up

    yield make
    for up in started:
        try:
            lt.run(up._stop(), timeout=10)
        except Exception:
            pass
    lt.close()


@pytest.fixture
def upstream(upstream_factory) -> Upstream:
    return upstream_factory()


class RunningBridge:
    """A real bridge (mitmproxy master and all) on ephemeral loopback ports."""

    def __init__(self, bridge, lt: LoopThread, home: Path, config_path: Path) -> None:
        self.bridge = bridge
        self.lt = lt
        self.home = home
        self.config_path = config_path

    def url(self, route: str) -> str:
        host, port = self.bridge.state.bound[route]
        return f"http://{host}:{port}"

    @property
    def proxy_url(self) -> str:
        return self.url("proxy")

    @property
    def control_url(self) -> str:
        return self.bridge.control.url

    @property
    def token(self) -> str:
        return self.bridge.token

    def control(self):
        from bridge_cli.control.client import ControlClient

        return ControlClient.from_home(self.home)

    def events(self):
        """Every FlowEvent published so far (subscribed at start)."""
        return list(self._events)

    def reload(self):
        return self.lt.run(self.bridge.reload())

    def stop(self) -> None:
        self.lt.run(self.bridge.stop())


@pytest.fixture
def bridge_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("BRIDGE_HOME", str(home))
    return home


@pytest.fixture
def start_bridge(tmp_path, bridge_home):
    """`start_bridge(yaml_text)` starts a bridge on that config (written to a file, so
    hot reload can be tested) and stops it at the end of the test."""
    lt = LoopThread("bridge")
    running: list[RunningBridge] = []

    def start(config_text: str, *, watch: bool = False, name: str = "bridge.yaml",
              replay=None) -> RunningBridge:
        from bridge_cli.proxy.runtime import Bridge
        from bridge_cli.store import bridge_home as home_of

        path = tmp_path / name
        path.write_text(textwrap.dedent(config_text))
        config = load_config(path)
        home = home_of()

        async def make():
            return Bridge(config, home, config_path=path, watch=watch, replay=replay)

        b = lt.run(make())
        rb = RunningBridge(b, lt, home, path)
        rb._events = []
        b.bus.subscribe(rb._events.append)
        lt.run(b.start())
        running.append(rb)
        return rb

    yield start
    for rb in running:
        try:
            rb.stop()
        except Exception:
            pass
    lt.close()


@pytest.fixture
def client():
    """A plain httpx client that ignores proxy settings in the environment."""
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    """Poll `predicate` until it returns something true, and return that; an AssertionError
    naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what}: not met within {timeout}s")


def start_up(args, cwd: Path, env: dict) -> tuple[subprocess.Popen, dict]:
    """`bridge up ARGS` as a user runs it; returns the process and its control.json once
    it is serving (an AssertionError with its stderr if it exits first)."""
    proc = subprocess.Popen([sys.executable, "-m", "bridge_cli", "up", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    control = Path(env["BRIDGE_HOME"]) / "control.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if control.exists():
            try:
                return proc, json.loads(control.read_text())
            except ValueError:
                pass
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"bridge up exited {proc.returncode}: {err}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("bridge up did not write control.json")


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C a `bridge up` process; its (stdout, stderr)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def free_env() -> dict[str, str]:
    """The environment for a bridge subprocess: no proxies of the machine."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env


def jdump(obj) -> str:
    return json.dumps(obj)
