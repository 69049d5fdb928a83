"""The breakers, spend, chaos and drift panels: one table each, redrawn from the Model."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import DataTable

from bridge_cli.tui.model import Model
from bridge_cli.tui.palette import BREAKER_TONE, SEVERITY_TONE, tone, toned

BAR = 16  # cells of a budget bar


class Panel(DataTable):
    """A row-cursor table with fixed columns; `show(model)` redraws it."""

    COLUMNS: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for name in self.COLUMNS:
            self.add_column(name, key=name)

    def redraw(self, rows: list[tuple[str, tuple]]) -> None:
        at = self.cursor_row
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if self.row_count:
            self.move_cursor(row=min(max(at, 0), self.row_count - 1), animate=False)

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else ""


class BreakersPanel(Panel):
    COLUMNS = ("route", "upstream", "state", "failures", "last transition")

    def show(self, model: Model) -> None:
        rows = []
        for (route, upstream), b in sorted(model.breakers.items()):
            state = b.get("state", "closed")
            label = state.replace("_", "-")
            if state == "open" and b.get("open_remaining_s") is not None:
                label = f"open {b['open_remaining_s']:.0f}s"
            t = model.transitions.get((route, upstream))
            last = (f"{t['old']}→{t['new']} {_clock(t['ts'])}" if t else "")
            rate = b.get("failure_rate")
            rows.append((f"{route}/{upstream}", (
                route, upstream, toned(self.app, label, BREAKER_TONE.get(state), bold=True),
                f"{rate:.0%} of {b.get('calls', 0)}" if rate is not None else "", last)))
        self.redraw(rows)


class SpendPanel(Panel):
    COLUMNS = ("budget", "used", "spent", "limit", "period")

    def show(self, model: Model) -> None:
        rows = []
        for b in (model.spend or {}).get("budgets", []):
            used = float(b.get("used") or 0.0)
            alert = float(b.get("alert_at", model.alert_at.get(b["budget"], 0.8)))
            meaning = "error" if used >= 1.0 else "warning" if used >= alert else "success"
            fill = min(BAR, round(used * BAR))
            bar = Text("█" * fill, style=tone(self.app, meaning))
            bar.append("░" * (BAR - fill), style=tone(self.app, "foreground-muted"))
            bar.append(f" {used:>4.0%}")
            rows.append((b["budget"], (b["budget"], bar, f"${float(b['spent_usd']):.4f}",
                                       f"${float(b['limit_usd']):.2f}", b.get("period", ""))))
        self.redraw(rows)

    def summary(self, model: Model) -> str:
        doc = model.spend
        if doc is None:
            return "spend: waiting for the bridge"
        groups = ", ".join(f"{g.get('route')} ${float(g['cost_usd']):.4f}"
                           for g in doc.get("groups", []))
        return (f"today ${float(doc.get('total_usd', 0)):.4f} in {doc.get('calls', 0)} calls"
                f"  ·  saved by cache ${float(doc.get('saved_usd', 0)):.4f}"
                + (f"  ·  {groups}" if groups else ""))


class ChaosPanel(Panel):
    COLUMNS = ("fault", "route", "does", "hits", "left")

    def show(self, model: Model) -> None:
        rows = []
        for f in model.faults:
            left = f.get("remaining_s")
            count = f.get("count")
            more = f"{left:.0f}s" if left is not None else ""
            if count:
                more = f"{more} {max(0, count - f.get('hits', 0))} hits".strip()
            rows.append((f["name"], (toned(self.app, f["name"], "secondary", bold=True),
                                     f.get("route") or "*", f.get("does") or "",
                                     str(f.get("hits", 0)), more or "until cleared")))
        self.redraw(rows)


class DriftPanel(Panel):
    COLUMNS = ("class", "route", "endpoint", "change", "path")

    def show(self, model: Model) -> None:
        rows = []
        for i, d in enumerate(model.findings):
            severity = d.get("severity", "")
            rows.append((str(i), (toned(self.app, severity, SEVERITY_TONE.get(severity), True),
                                  d.get("route", ""), d.get("endpoint", ""),
                                  d.get("change") or d.get("kind", ""), d.get("path", ""))))
        self.redraw(rows)
