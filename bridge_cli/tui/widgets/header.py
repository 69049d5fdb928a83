"""The header: connection, requests per second and p50/p95 latency over the last minutes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static

from bridge_cli.tui.model import Model


class TrafficHeader(Vertical):
    """Status line over three sparklines."""

    def compose(self) -> ComposeResult:
        yield Static(id="status-line")
        with Horizontal(id="sparks"):
            yield Label("req/s", classes="spark-label")
            yield Sparkline([], id="spark-rps", summary_function=max)
            yield Label("p50", classes="spark-label")
            yield Sparkline([], id="spark-p50", summary_function=max)
            yield Label("p95", classes="spark-label")
            yield Sparkline([], id="spark-p95", summary_function=max)

    def show(self, model: Model, connection: str, paused: bool) -> None:
        p50 = model.latency_series(0.5)
        p95 = model.latency_series(0.95)
        now50 = f"{p50[-1]:.0f}" if p50 else "-"
        now95 = f"{p95[-1]:.0f}" if p95 else "-"
        parts = [connection, f"{model.requests_per_second():.1f} req/s",
                 f"p50 {now50} ms", f"p95 {now95} ms"]
        if model.dropped:
            parts.append(f"{model.dropped} events skipped")
        if paused:
            parts.append("PAUSED")
        self.query_one("#status-line", Static).update("  ·  ".join(parts))
        self.query_one("#spark-rps", Sparkline).data = list(model.rps)[-60:]
        self.query_one("#spark-p50", Sparkline).data = p50[-60:]
        self.query_one("#spark-p95", Sparkline).data = p95[-60:]
