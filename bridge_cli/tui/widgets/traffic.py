"""The live traffic table: recent flows, newest first, coloured by status."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from rich.text import Text
from textual.widgets import DataTable

from bridge_cli.tui.palette import status_tone, toned

# (name, width): path takes what the others leave; each width has one space after it
COLUMNS = (("time", 9), ("method", 7), ("route", 8), ("path", 0), ("upstream", 9),
           ("st", 4), ("ms", 6), ("cache", 6), ("fault", 6), ("cost", 8))
MIN_PATH = 12
SHOWN = 100  # rows drawn: the table shows the newest; the model keeps more


def path_of(url: str) -> str:
    parts = urlsplit(url or "")
    return parts.path + (f"?{parts.query}" if parts.query else "") or "/"


def cost_of(flow: dict) -> str:
    cost, status = flow.get("cost_usd"), flow.get("spend_status")
    if status == "unpriced":
        return "unpriced"
    if cost is None:
        return ""
    return f"~${float(cost):.4f}" if status == "estimated" else f"${float(cost):.4f}"


class TrafficTable(DataTable):
    """One row per flow; the row key is the flow's request id."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.cell_padding = 0
        self._lay_out(self.size.width or 80)

    def on_resize(self, event) -> None:
        if self.columns.get("path") is not None and event.size.width != self._laid_out:
            self._lay_out(event.size.width)

    def _lay_out(self, width: int) -> None:
        """Fixed columns, and the path as wide as the terminal leaves (80 columns: 12)."""
        self._laid_out = width
        fixed = sum(w for _, w in COLUMNS)
        self.clear(columns=True)
        for name, w in COLUMNS:
            self.add_column(name, key=name, width=w or max(MIN_PATH, width - fixed - 4))
        self.cell_padding = 0

    def show(self, flows: list[dict]) -> None:
        """Redraw with `flows` (newest first), keeping the cursor on the same flow."""
        keep = self._selected_key()
        self.clear()
        for flow in flows:
            self.add_row(*self._cells(flow), key=flow["id"])
        if keep is not None and keep in self.rows:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def _selected_key(self) -> str | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        try:
            return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value
        except Exception:  # noqa: BLE001 - the cursor is past the rows
            return None

    def selected_flow_id(self) -> str | None:
        return self._selected_key()

    def _cells(self, flow: dict) -> tuple:
        app = self.app
        status = flow.get("status")
        tone = status_tone(status) if status else "error"
        label = str(status) if status is not None else (flow.get("error") or "---")[:3]
        ts = flow.get("ts")
        clock = time.strftime("%H:%M:%S", time.localtime(ts)) if ts else ""
        cache = flow.get("cache") or ""
        faults = ",".join(flow.get("faults") or ())
        return (clock, flow.get("method", ""), flow.get("route") or "-",
                Text(path_of(flow.get("url", "")), overflow="ellipsis", no_wrap=True),
                flow.get("upstream") or "-", toned(app, label, tone, bold=True),
                f"{flow.get('duration_ms', 0):.0f}",
                toned(app, cache, "accent" if cache in ("hit", "coalesced", "replay") else None),
                toned(app, faults, "secondary" if faults else None), cost_of(flow))
