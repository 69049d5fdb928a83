"""`bridge dash`: the Textual dashboard driven by a real bridge and a real upstream
(App.run_test and Pilot for each key and screen), snapshots at 80×24 and 120×40 from fixed
events, and its memory after 20 000 events."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import httpx
import pytest
from aiohttp import web

from bridge_cli.tui.app import DashboardApp
from bridge_cli.tui.screens.dialogs import FindingScreen, HelpScreen, InjectScreen
from bridge_cli.tui.screens.flow import FlowScreen
from bridge_cli.tui.widgets.panels import BreakersPanel, ChaosPanel, DriftPanel
from bridge_cli.tui.widgets.traffic import TrafficTable
from tests.conftest import bridge_cmd, cli_env, config_yaml, json_answer, route_yaml

BREAKER = "breaker: {failure_rate: 50%, window: 2, min_calls: 2, open_for: 30s}"


async def until(pilot, predicate, what: str, timeout: float = 10.0):
    """Let the app run until `predicate()` is true; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"{what}: not met within {timeout}s")


def rows(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def call(method: str, url: str, **kw) -> httpx.Response:
    """A blocking httpx call off the app's loop."""
    def go():
        with httpx.Client(trust_env=False, timeout=10) as c:
            return c.request(method, url, **kw)
    return await asyncio.to_thread(go)


@pytest.fixture
def live(start_bridge, upstream_factory):
    """A bridge with a breaker route (api: main fails, spare answers) and a drift route."""
    bad, good, items = upstream_factory(), upstream_factory(), upstream_factory()
    bad.on("/v1/chat", json_answer({"error": "down"}, status=503))
    good.on("/v1/chat", json_answer({"id": "c1", "choices": [{"text": "hi"}]}))
    good.on("/v1/missing", json_answer({"error": "no"}, status=404))
    shape = {"price": 10}

    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "name": "a", **shape})

    items.on("/items/1", item)
    b = start_bridge(config_yaml(
        route_yaml("api", ("main", bad.url), ("spare", good.url),
                   extra=f"retry: {{methods: [POST]}}\n{BREAKER}"),
        route_yaml("shop", ("shop-up", items.url), extra="drift: {learn: true}")))
    b.shape = shape
    return b


async def test_the_dashboard_shows_a_real_bridge_and_every_key_works(live):
    b = live
    app = DashboardApp(b.control_url, b.token)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.connection.startswith("connected"), "connected")
        for _ in range(3):
            await call("POST", b.url("api") + "/v1/chat", json={"q": 1})
        await call("POST", b.url("api") + "/v1/missing", json={})
        table = app.query_one(TrafficTable)
        await until(pilot, lambda: table.row_count == 4, "four flows in the table")
        assert rows(table)[0][1:4] == ["POST", "api", "/v1/missing"] and rows(table)[0][5] == "404"

        # `/` filters by status class; escape clears it
        await pilot.press("slash", *"4xx", "enter")
        await until(pilot, lambda: table.row_count == 1, "only the 404")
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 4, "all flows again")

        # space pauses the table while the flows keep coming; space again resumes
        await pilot.press("space")
        await call("POST", b.url("api") + "/v1/chat", json={})
        await until(pilot, lambda: len(app.model.flows) == 5, "the fifth flow arrives")
        await pilot.pause(0.6)
        assert table.row_count == 4
        await pilot.press("space")
        await until(pilot, lambda: table.row_count == 5, "the table resumes")

        # enter opens a flow: its tries, headers and body
        table.focus()
        table.move_cursor(row=table.get_row_index(
            next(f["id"] for f in app.model.flows if f["url"].endswith("/v1/chat"))))
        await pilot.press("enter")
        screen = await until(pilot, lambda: isinstance(app.screen, FlowScreen) and app.screen,
                             "the flow view")
        assert "spare" in str(screen.query_one("#flow-timeline").render())
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, FlowScreen), "back to traffic")

        # 2: breakers, main open
        await pilot.press("2")
        breakers = app.query_one(BreakersPanel)
        await until(pilot, lambda: any(r[1] == "main" and r[2].startswith("open")
                                       for r in rows(breakers)), "main's breaker open")
        assert any("closed→open" in r[4] for r in rows(breakers))

        # 4, a: inject a fault through the form; x clears it
        await pilot.press("4", "a")
        form = await until(pilot, lambda: isinstance(app.screen, InjectScreen) and app.screen,
                           "the inject form")
        form.query_one("#value").value = "418"
        form.query_one("#name").value = "teapot"
        await pilot.click("#inject-ok")
        chaos = app.query_one(ChaosPanel)
        await until(pilot, lambda: any(r[0] == "teapot" for r in rows(chaos)), "the fault row")
        assert [f["name"] for f in b.control().faults()["faults"]] == ["teapot"]
        assert (await call("POST", b.url("api") + "/v1/chat", json={})).status_code == 418
        chaos.focus()
        await pilot.press("x")
        await until(pilot, lambda: not b.control().faults()["faults"], "the fault cleared")
        await until(pilot, lambda: chaos.row_count == 0, "the fault row gone")

        # 5: drift; enter shows before/after
        for _ in range(6):
            await call("GET", b.url("shop") + "/items/1")
        b.shape["price"] = "10.00"
        await call("GET", b.url("shop") + "/items/1")
        await pilot.press("5")
        drift = app.query_one(DriftPanel)
        await until(pilot, lambda: drift.row_count >= 1, "the drift finding")
        drift.focus()
        await pilot.press("enter")
        finding = await until(pilot, lambda: isinstance(app.screen, FindingScreen) and app.screen,
                              "the finding view")
        text = str(finding.query_one("#finding-text").render())
        assert "before    integer" in text and "after     string" in text
        await pilot.press("escape")

        # 3: spend tab, ?: help, q: quit
        await pilot.press("3")
        assert app.query_one("#tabs").active == "spend"
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.press("escape", "q")
    assert app.return_code == 0


async def test_without_a_bridge_it_says_so_then_connects_and_reconnects_by_itself(
        tmp_path, start_bridge, upstream, bridge_home):
    from bridge_cli.tui.app import make_app

    app = make_app(None, None, bridge_home)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "no bridge is running" in app.connection, "says so")
        assert "bridge up" in app.connection
        cfg = config_yaml(route_yaml("api", ("main", upstream.url)))
        b = await asyncio.to_thread(start_bridge, cfg)
        await until(pilot, lambda: app.connection.startswith("connected"), "connected")
        await asyncio.to_thread(b.stop)
        await until(pilot, lambda: "reconnecting" in app.connection, "says it reconnects")
        b2 = await asyncio.to_thread(start_bridge, cfg, name="again.yaml")  # a new token
        await until(pilot, lambda: app.connection.startswith("connected"), "connected again")
        await call("GET", b2.url("api") + "/x")
        await until(pilot, lambda: app.query_one(TrafficTable).row_count == 1, "its flow")


def test_bridge_dash_without_a_bridge_outside_a_terminal_says_so(tmp_path):
    r = bridge_cmd(["dash"], cli_env(tmp_path / "home"))
    assert r.returncode == 2
    assert "no bridge is running" in r.stderr and "bridge up" in r.stderr
    assert "Traceback" not in r.stderr


# --- fixed events: memory and snapshots ---------------------------------------------------------

def flow(i: int, status: int = 200, **over) -> dict:
    return {"id": f"req-{i:05d}", "ts": 1_767_225_600 + i, "route": "openai" if i % 3 else "api",
            "method": "POST", "url": "http://127.0.0.1:8081/v1/chat/completions",
            "status": status, "upstream": "primary", "duration_ms": 40.0 + (i * 7) % 90,
            "tries": [{"upstream": "primary", "outcome": "ok", "status": status,
                       "duration_ms": 39.0, "fault": None}],
            "faults": [], "cache": "miss", "cost_usd": "0.000150", "spend_status": "priced",
            **over}


async def test_memory_stays_bounded_after_20000_events_and_it_keeps_up():
    app = DashboardApp("", "", connect=False)
    async with app.run_test(size=(80, 24)) as pilot:
        for i in range(2000):
            app.apply("flow", flow(i), i + 1)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        for i in range(2000, 22000):
            app.apply("flow", flow(i, 200 if i % 7 else 503), i + 1)
            if i % 1000 == 0:
                app.apply("stats", {"ts": 1_767_225_600 + i, "routes": {"api": {"requests": i}}})
        took = time.perf_counter() - started
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        app.redraw()
        await pilot.pause()
        assert len(app.model.flows) == 2000
        assert app.model.flows[0]["id"] == "req-21999"
        assert grown < 2_000_000, f"{grown} bytes more after 20 000 events"
        assert took < 20_000 / 200 / 10, "folding events must be far faster than 200/s"
        assert app.query_one(TrafficTable).row_count <= 100


def fixed_app() -> DashboardApp:
    app = DashboardApp("http://127.0.0.1:8765", "t", connect=False,
                       clock=lambda: 1_767_225_700.0)
    app.connection = "connected to http://127.0.0.1:8765"
    for i in range(40):
        app.apply("flow", flow(i, 200 if i % 9 else 503,
                               faults=["openai-503-1"] if i % 9 == 0 else []), i + 1)
        if i % 5 == 0:
            app.apply("stats", {"ts": 1_767_225_600 + i, "routes": {
                "openai": {"requests": i * 3}}, "breakers": [
                {"route": "openai", "upstream": "primary", "state": "closed",
                 "failure_rate": 0.1, "calls": 10},
                {"route": "openai", "upstream": "backup", "state": "open",
                 "failure_rate": 0.75, "calls": 4, "open_remaining_s": 21.0}],
                "faults": [{"name": "openai-503-1", "route": "openai", "hits": 5,
                            "does": "answer 503 on route openai (30% of requests)",
                            "remaining_s": 280.0}]})
    return app


DOC = {"id": "req-00009", "flow": flow(9, 200, attempts=2, tries=[
    {"upstream": "primary", "outcome": "503", "status": 503, "duration_ms": 12.5,
     "fault": "openai-503-1"},
    {"upstream": "backup", "outcome": "ok", "status": 200, "duration_ms": 310.2, "fault": None}]),
    "request": {"headers": [["content-type", "application/json"],
                            ["authorization", "Bearer sk-…[redacted:sha256:1a2b3c4d]"]],
                "body": '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
                "size": 71, "truncated": False, "streamed": False,
                "content_type": "application/json"},
    "response": {"headers": [["content-type", "application/json"]],
                 "body": '{"id": "chatcmpl-1", "choices": [{"index": 0, "message": '
                         '{"role": "assistant", "content": "Hello!"}}], '
                         '"usage": {"prompt_tokens": 9, "completion_tokens": 3}}',
                 "size": 140, "truncated": False, "streamed": False,
                 "content_type": "application/json"}}


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot_main_screen(snap_compare, utc, size):
    async def settle(pilot):
        pilot.app.redraw()
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot_flow_detail(snap_compare, utc, size):
    async def open_flow(pilot):
        pilot.app.redraw()
        await pilot.app.push_screen(FlowScreen(DOC))
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=size, run_before=open_flow)


def test_bridge_up_dash_runs_both_in_one_process_and_q_drains_and_stops(tmp_path, upstream):
    import os
    import pty
    import subprocess
    import sys

    from tests.conftest import free_env

    home = tmp_path / "home"
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_yaml(route_yaml("api", ("main", upstream.url))))
    env = free_env() | {"BRIDGE_HOME": str(home), "TERM": "xterm-256color",
                        "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "bridge_cli", "up", "-c", str(cfg), "--dash"],
                            stdin=follower, stdout=follower, stderr=follower, env=env,
                            cwd=tmp_path)
    os.close(follower)
    try:
        control = home / "control.json"
        deadline = time.monotonic() + 30
        while not control.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert control.exists(), "bridge up --dash did not start"
        seen = b""
        while b"connected to" not in seen and time.monotonic() < deadline:
            seen += os.read(leader, 65536)
        assert b"connected to" in seen  # the dashboard reached its own bridge
        os.write(leader, b"q")
        while proc.poll() is None and time.monotonic() < deadline + 20:
            try:
                os.read(leader, 65536)
            except OSError:
                break
        assert proc.wait(20) == 0
        assert not control.exists()  # stopped cleanly: control.json removed
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
