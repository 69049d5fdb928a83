"""Small screens: help, a drift finding's before/after, and the fault injection form."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from bridge_cli.engine.faults import KINDS

HELP = """\
bridge dash — keys

  1-5      traffic, breakers, spend, chaos, drift
  /        filter flows: a route, a status class (5xx), text of the path
  space    pause / resume the traffic table
  enter    open the selected flow (traffic) or finding (drift)
  x        clear the selected fault (chaos)
  a        inject a fault (the options of `bridge chaos inject`)
  escape   close a view, clear the filter
  ?        this help
  q        quit (the bridge keeps running, unless `bridge up --dash`)
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help-text", classes="dialog")


class FindingScreen(ModalScreen):
    """A drift finding: where, what class, before and after."""

    BINDINGS = [Binding("escape,q,enter", "dismiss", "close")]

    def __init__(self, finding: dict) -> None:
        super().__init__()
        self.finding = finding

    def compose(self) -> ComposeResult:
        f = self.finding
        yield Static(
            f"{f.get('severity', '')} {f.get('change') or f.get('kind', '')}\n"
            f"route     {f.get('route', '')}\nendpoint  {f.get('endpoint', '')}\n"
            f"path      {f.get('path', '')}\n\nbefore    {f.get('before')}\n"
            f"after     {f.get('after')}\n\nflow      {f.get('flow_id') or f.get('example_flow', '')}"
            "\n\n`bridge drift accept` takes the new shape as the baseline",
            id="finding-text", classes="dialog")


FIELDS = (("name", "name (default: route-action-N)"), ("probability", "probability, e.g. 30%"),
          ("every", "every Nth request"), ("first", "the first N requests"),
          ("count", "remove after N hits"), ("for", "remove after, e.g. 5m"),
          ("upstream", "only this upstream"), ("stage", "upstream | client"),
          ("match_path", "only paths matching this glob"))


def fault_body(values: dict[str, str]) -> dict:
    """The POST /api/v1/faults body of the form's values: the keys `bridge chaos inject`
    sends, numbers as numbers, switches as true."""
    kind = values.get("kind") or "status"
    option = KINDS[kind].options[0]
    raw = values.get("value", "").strip()
    value: object = True if option.cli is bool else int(raw) if option.cli is int and \
        raw.isdigit() else raw
    body: dict = {"route": values.get("route") or "*", kind: value}
    for key, _ in FIELDS:
        text = values.get(key, "").strip()
        if not text:
            continue
        if key == "match_path":
            body["match"] = {"path": text}
        else:
            body[key] = int(text) if key in ("every", "first", "count") and text.isdigit() else text
    return body


class InjectScreen(ModalScreen[dict | None]):
    """The form behind `a`; dismissed with the fault's body, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, routes: list[str]) -> None:
        super().__init__()
        self.routes = routes

    def compose(self) -> ComposeResult:
        with Vertical(id="inject", classes="dialog"):
            yield Label("inject a fault")
            with VerticalScroll():
                yield Select([(r, r) for r in ["*", *self.routes]], value="*", id="route",
                             allow_blank=False)
                yield Select([(k, k) for k in KINDS], value="status", id="kind",
                             allow_blank=False)
                yield Input(placeholder="value: 503, 2s, openai-429, 50% …", id="value")
                for key, hint in FIELDS:
                    yield Input(placeholder=hint, id=key)
            with Horizontal(id="inject-buttons"):
                yield Button("inject", variant="primary", id="inject-ok")
                yield Button("cancel", id="inject-cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "inject-ok":
            self.dismiss(None)
            return
        values = {w.id: str(w.value) for w in self.query("Input, Select") if w.id}
        self.dismiss(fault_body(values))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        values = {w.id: str(w.value) for w in self.query("Input, Select") if w.id}
        self.dismiss(fault_body(values))
