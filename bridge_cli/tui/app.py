"""`bridge dash`: a Textual dashboard that is a client of the control API and nothing else.

One worker reads the event stream and folds each event into the Model; a timer redraws the
screen from the Model twice a second, so a burst of traffic costs one redraw, never a
queue of them. `DashboardApp(url, token)` is the app; `make_app` is what the CLI runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from bridge_cli.tui.api import START_HINT, ControlAPI, Unreachable, read_control_file
from bridge_cli.tui.model import KEEP_FLOWS, FlowFilter, Model
from bridge_cli.tui.screens.dialogs import FindingScreen, HelpScreen, InjectScreen
from bridge_cli.tui.screens.flow import FlowScreen
from bridge_cli.tui.widgets.header import TrafficHeader
from bridge_cli.tui.widgets.panels import BreakersPanel, ChaosPanel, DriftPanel, SpendPanel
from bridge_cli.tui.widgets.traffic import SHOWN, TrafficTable

TABS = ("traffic", "breakers", "spend", "chaos", "drift")
REDRAW_EVERY = 0.5  # seconds between two redraws
RECONNECT_EVERY = 1.0  # seconds between two tries to reach the bridge
SPEND_EVERY = 5.0  # seconds between two reads of the spend report


class DashboardApp(App):
    """The dashboard of the bridge at `url` (control API) with bearer `token`."""

    CSS_PATH = "bridge.tcss"
    TITLE = "bridge dash"
    BINDINGS = [
        Binding("slash", "filter", "filter"),
        Binding("space", "pause", "pause"),
        Binding("enter", "open", "open", show=False),
        Binding("x", "clear_fault", "clear fault"),
        Binding("a", "inject", "inject"),
        Binding("question_mark", "help", "help"),
        Binding("escape", "unfilter", "clear filter", show=False),
        Binding("q", "quit", "quit"),
        *[Binding(str(n), f"tab('{name}')", name, show=False)
          for n, name in enumerate(TABS, 1)],
    ]

    def __init__(self, url: str, token: str, *,
                 refresh: Callable[[], tuple[str, str] | None] | None = None,
                 keep: int = KEEP_FLOWS, connect: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.api = ControlAPI(url, token, refresh)
        self.model = Model(keep=keep, clock=clock)
        self.flow_filter = FlowFilter()
        self.paused = False
        self.connection = f"connecting to {url or 'bridge'}…"
        self.connect = connect
        self._drawn = (-1, "", "", False)
        self._started_at: float | None = None
        self._spend_due = True

    def compose(self) -> ComposeResult:
        yield TrafficHeader(id="header")
        yield Input(placeholder="filter: route, 5xx, path text — enter to apply, escape to clear",
                    id="filter")
        with TabbedContent(initial="traffic", id="tabs"):
            with TabPane("1 traffic", id="traffic"):
                yield TrafficTable(id="traffic-table")
            with TabPane("2 breakers", id="breakers"):
                yield BreakersPanel(id="breakers-table")
            with TabPane("3 spend", id="spend"):
                yield Static(id="spend-summary")
                yield SpendPanel(id="spend-table")
            with TabPane("4 chaos", id="chaos"):
                yield ChaosPanel(id="chaos-table")
            with TabPane("5 drift", id="drift"):
                yield DriftPanel(id="drift-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.set_interval(REDRAW_EVERY, self.redraw)
        if self.connect:
            self.feed()
            self.set_interval(1.0, self._spend_tick)
        self.redraw()

    # --- data ------------------------------------------------------------------------
    def apply(self, kind: str, data: dict, event_id: int | None = None) -> None:
        """Fold one event into the Model (the feed calls this; tests may too)."""
        self.model.apply(kind, data, event_id)
        if kind == "budget_alert" or (kind == "flow" and data.get("cost_usd")):
            self._spend_due = True

    @work(exclusive=True, group="feed", exit_on_error=False)
    async def feed(self) -> None:
        """Read the event stream for as long as the app runs, reconnecting by itself."""
        while True:
            try:
                await self._read_stream()
                self.connection = f"the bridge at {self.api.url} stopped; reconnecting…"
            except Unreachable as e:
                self.connection = f"{e}: {START_HINT}; reconnecting…"
            except (httpx.HTTPError, ValueError) as e:
                self.connection = f"lost the bridge ({type(e).__name__}); reconnecting…"
            await asyncio.sleep(RECONNECT_EVERY)
            self.api.renew()

    async def _read_stream(self) -> None:
        if not self.api.url:
            raise Unreachable("no bridge is running")
        await self._load_drift()
        async for event_id, kind, data in self.api.events(self.model.last_id):
            if kind == "hello":
                if self._started_at is not None and data.get("started_at") != self._started_at \
                        and self.model.last_id:
                    self._started_at = data.get("started_at")
                    self.model.restarted()  # a new bridge: its ids begin again
                    return
                self._started_at = data.get("started_at")
                self.connection = f"connected to {self.api.url}"
                self._spend_due = True
                continue
            self.apply(kind, data, event_id)
            if kind == "drift" or kind == "fault":
                self.redraw()

    async def _load_drift(self) -> None:
        try:
            self.model.set_drift(await self.api.call("GET", "drift"))
        except ValueError:
            pass  # a store that can't be read: the findings come as events

    def _spend_tick(self) -> None:
        now = time.monotonic()
        if self._spend_due or now - getattr(self, "_spend_at", 0.0) >= SPEND_EVERY:
            self._spend_due = False
            self._spend_at = now
            self.load_spend()

    @work(exclusive=True, group="spend", exit_on_error=False)
    async def load_spend(self) -> None:
        try:
            self.model.set_spend(await self.api.call("GET", "spend", params={"since": "today"}))
        except (Unreachable, ValueError, httpx.HTTPError):
            pass  # the feed says whether the bridge is there

    # --- drawing ----------------------------------------------------------------------
    def redraw(self) -> None:
        """Redraw every panel from the Model, when something changed since the last time."""
        state = (self.model.version, self.connection, self.flow_filter.text, self.paused)
        if state == self._drawn:
            return
        self._drawn = state
        model = self.model
        self.query_one(TrafficHeader).show(model, self.connection, self.paused)
        if not self.paused:
            self.query_one(TrafficTable).show(model.visible_flows(self.flow_filter, SHOWN))
        self.query_one(BreakersPanel).show(model)
        spend = self.query_one(SpendPanel)
        spend.show(model)
        self.query_one("#spend-summary", Static).update(spend.summary(model))
        self.query_one(ChaosPanel).show(model)
        self.query_one(DriftPanel).show(model)

    # --- keys ---------------------------------------------------------------------------
    def action_tab(self, name: str) -> None:
        self.query_one(TabbedContent).active = name
        self._focus_tab(name)

    def _focus_tab(self, name: str) -> None:
        table = {"traffic": TrafficTable, "breakers": BreakersPanel, "spend": SpendPanel,
                 "chaos": ChaosPanel, "drift": DriftPanel}[name]
        self.query_one(table).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._focus_tab(event.pane.id or "traffic")

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.flow_filter.text
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.flow_filter = FlowFilter(event.value.strip())
            event.input.display = bool(self.flow_filter.text)
            self.action_tab("traffic")
            self.redraw()

    def action_unfilter(self) -> None:
        self.flow_filter = FlowFilter()
        self.query_one("#filter", Input).display = False
        self.action_tab(self.query_one(TabbedContent).active or "traffic")
        self.redraw()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.redraw()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_open(self) -> None:
        tab = self.query_one(TabbedContent).active
        if tab == "traffic":
            flow_id = self.query_one(TrafficTable).selected_flow_id()
            if flow_id:
                self.open_flow(flow_id)
        elif tab == "drift":
            self._open_finding()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if isinstance(event.data_table, TrafficTable) and event.row_key.value:
            self.open_flow(event.row_key.value)
        elif isinstance(event.data_table, DriftPanel):
            self._open_finding()

    def _open_finding(self) -> None:
        key = self.query_one(DriftPanel).selected_key()
        if key is not None and int(key) < len(self.model.findings):
            self.push_screen(FindingScreen(self.model.findings[int(key)]))

    @work(exclusive=True, group="open", exit_on_error=False)
    async def open_flow(self, flow_id: str) -> None:
        """The flow view: the bridge's full record, or the summary when it is gone."""
        try:
            doc = await self.api.call("GET", f"flows/{flow_id}")
        except (Unreachable, ValueError, httpx.HTTPError) as e:
            flow = next((f for f in self.model.flows if f.get("id") == flow_id), None)
            if flow is None:
                self.notify(str(e), severity="error")
                return
            self.notify("headers and bodies are no longer kept; showing the summary")
            doc = {"id": flow_id, "flow": flow, "request": None, "response": None}
        await self.push_screen(FlowScreen(doc))

    def action_clear_fault(self) -> None:
        if self.query_one(TabbedContent).active != "chaos":
            self.action_tab("chaos")
            return
        name = self.query_one(ChaosPanel).selected_key()
        if name:
            self.send_fault("DELETE", f"faults/{name}", None, f"cleared {name}")

    def action_inject(self) -> None:
        routes = [r for r in self.model.routes if r != "proxy"]

        def done(body: dict | None) -> None:
            if body is not None:
                self.send_fault("POST", "faults", body, "injected")

        self.push_screen(InjectScreen(routes), done)

    @work(group="faults", exit_on_error=False)
    async def send_fault(self, method: str, path: str, body: dict | None, said: str) -> None:
        try:
            answer = await self.api.call(method, path, json=body)
        except (Unreachable, ValueError, httpx.HTTPError) as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        name = answer.get("fault", {}).get("name", "")
        self.notify(f"{said} {name}".strip())
        if method == "POST":
            self.model.apply("fault", {"name": name, "what": "injected",
                                       "route": answer["fault"].get("route"),
                                       "does": answer["fault"].get("does")})
        else:
            self.model.apply("fault", {"name": path.rsplit("/", 1)[-1], "what": "cleared"})
        self.redraw()


def make_app(url: str | None, token: str | None, home: Path | None) -> DashboardApp:
    """The app the CLI runs: `url`/`token` as given, else (and after a restart) from
    `home`/control.json."""
    refresh = (lambda: read_control_file(home)) if home is not None and url is None else None
    if url is None:
        url, token = read_control_file(home) if home is not None and read_control_file(home) \
            else ("", "")
    return DashboardApp(url, token or "", refresh=refresh)
