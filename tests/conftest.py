"""Shared fixtures: real upstream servers and a real bridge, both on loopback; and the
helpers more than one test file needs (config YAML, flow events, upstream handlers, the
`bridge` CLI as a subprocess, fake clocks).

Both run on event loops in background threads, so tests drive them with ordinary
blocking clients (httpx, the openai SDK) exactly as an app would. A test that needs
bridge's policy time (breaker windows, fault durations, cache ages) to pass passes
`clock=ManualClock()` to `start_bridge` and moves it, instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
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
from bridge_cli.engine.clock import Clock
from bridge_cli.store import DiskStore

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

    @property
    def clock(self) -> Clock:
        """The bridge's policy clock: a ManualClock when the test passed one."""
        return self.bridge.clock

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
    hot reload can be tested) and stops it at the end of the test. `clock`: the bridge's
    policy clock (the real one unless the test passes, say, a ManualClock)."""
    lt = LoopThread("bridge")
    running: list[RunningBridge] = []

    def start(config_text: str, *, watch: bool = False, name: str = "bridge.yaml",
              replay=None, clock: Clock | None = None) -> RunningBridge:
        from bridge_cli.proxy.runtime import Bridge
        from bridge_cli.store import bridge_home as home_of

        path = tmp_path / name
        path.write_text(textwrap.dedent(config_text))
        config = load_config(path)
        home = home_of()

        async def make():
            return Bridge(config, home, config_path=path, watch=watch, replay=replay,
                          clock=clock or Clock())

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


def cli_env(home: Path, columns: int = 200) -> dict[str, str]:
    """free_env() for a `bridge` command on BRIDGE_HOME `home`, in a `columns`-wide terminal,
    importing this checkout."""
    return free_env() | {"BRIDGE_HOME": str(home), "COLUMNS": str(columns),
                         "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def bridge_cmd(args: list[str], env: dict, cwd: Path | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """`bridge ARGS` run to its end (stdin: not a terminal); its exit code and output."""
    return subprocess.run([sys.executable, "-m", "bridge_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def control_get(control: dict, path: str) -> dict:
    """GET /api/v1/PATH of the bridge that wrote `control` (its control.json)."""
    return httpx.get(control["url"] + "/api/v1/" + path, trust_env=False, timeout=10,
                     headers={"Authorization": f"Bearer {control['token']}"}).json()


def jdump(obj) -> str:
    return json.dumps(obj)


# --- config YAML ----------------------------------------------------------------------------


def route_yaml(name: str, *upstreams, extra: str = "", **keys: str | None) -> str:
    """One reverse route's YAML on an ephemeral loopback port. `upstreams` are (name, url) or
    (name, url, weight); `keys` are route keys given as flow YAML (cache="{ttl: 2s}",
    spend="{provider: openai}"; None leaves one out); `extra` is more YAML at the route's
    level (retry:, breaker:, timeout:, …)."""
    lines = [f"  - name: {name}", "    listen: 127.0.0.1:0", "    upstreams:"]
    for up, url, *weight in upstreams:
        w = f", weight: {weight[0]}" if weight else ""
        lines.append(f'      - {{name: {up}, url: "{url}"{w}}}')
    lines += [f"    {key}: {value}" for key, value in keys.items() if value is not None]
    lines += ["    " + line for line in textwrap.dedent(extra).strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def config_yaml(*routes: str, proxy: bool = False, top: str = "", chaos: str = "") -> str:
    """A whole config of `routes` (route_yaml's), control on an ephemeral port; `proxy`: an
    explicit proxy listener too; `top`: more top-level YAML (budget:, pricing:); `chaos`:
    the body of the chaos: section."""
    text = "version: 2\ncontrol: {listen: 127.0.0.1:0}\n"
    if proxy:
        text += "proxy: {listen: 127.0.0.1:0}\n"
    text += textwrap.dedent(top) + "routes:\n" + "".join(routes)
    if chaos:
        text += "chaos:\n" + textwrap.indent(textwrap.dedent(chaos).strip("\n"), "  ") + "\n"
    return text


def one_route(*upstreams, extra: str = "", route: str = "api", **config) -> str:
    """A config of the one route `route`: route_yaml's upstreams and extra, config_yaml's
    keywords (proxy, top, chaos)."""
    return config_yaml(route_yaml(route, *upstreams, extra=extra), **config)


# --- what bridge published --------------------------------------------------------------------


def flow_event(b: RunningBridge, response: httpx.Response | None = None, rid: str | None = None):
    """The FlowEvent of the request that got `response` (or has request id `rid`), once it
    is published (a stream's at its end)."""
    rid = rid or response.headers["x-bridge-request-id"]

    def find():
        return next((e for e in b.events() if e.kind == "flow" and e.id == rid), None)

    return wait_for(find, what=f"the flow event of request {rid}")


def tries(event, *, fault: bool = False) -> list[tuple]:
    """(upstream, outcome) of each try of a FlowEvent; with `fault`, (upstream, outcome,
    the fault that hit the try or None)."""
    if fault:
        return [(t.upstream, t.outcome, t.fault) for t in event.tries]
    return [(t.upstream, t.outcome) for t in event.tries]


def breaker_moves(b: RunningBridge, upstream: str | None = None) -> list[tuple[str, str]]:
    """(old, new) of every breaker transition so far, of `upstream`'s breaker or all."""
    return [(e.old, e.new) for e in b.events()
            if e.kind == "breaker" and (upstream is None or e.upstream == upstream)]


# --- upstreams, ports and clients ------------------------------------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago (bound and closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_url() -> str:
    """A URL on a port that was bound and closed again: connecting to it is refused."""
    return f"http://127.0.0.1:{free_port()}"


def json_answer(payload, status: int = 200, content_type: str = "application/json") -> Handler:
    """An upstream handler answering `payload` as JSON."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=json.dumps(payload).encode(),
                            content_type=content_type)

    return handler


def counting_sse(n: int, gap: float = 0.0) -> Handler:
    """An SSE upstream handler sending `data: 0` ... `data: n-1` (`gap` seconds after each),
    then a clean end."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            await resp.write(f"data: {i}\n\n".encode())
            if gap:
                await asyncio.sleep(gap)
        await resp.write_eof()
        return resp

    return handler


def openai_sdk(b: RunningBridge, route: str = "api", retries: int = 0):
    """The official openai SDK pointed at bridge's `route`, with `retries` of its own."""
    import openai

    return openai.OpenAI(base_url=b.url(route) + "/v1", api_key="sk-test", max_retries=retries,
                         http_client=httpx.Client(trust_env=False))


# --- fakes for unit tests ----------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand (`.now`, seconds): call it for the time; `sleep`
    moves it at once."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def store(tmp_path):
    """A DiskStore in the test's directory, closed at the end."""
    s = DiskStore(tmp_path / "store")
    yield s
    s.close()
