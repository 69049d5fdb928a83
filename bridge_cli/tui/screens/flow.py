"""One flow in full: the summary, the timeline of tries, headers (redacted) and the JSON
bodies pretty-printed in a folding tree."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Collapsible, Footer, Static, Tree

from bridge_cli.tui.widgets.traffic import cost_of, path_of

FOLD_ITEMS = 50  # items of one JSON array or object shown; the rest is counted


def timeline(flow: dict) -> str:
    """One line per try: upstream, outcome, status, time, the fault that decided it."""
    lines = []
    for n, t in enumerate(flow.get("tries") or (), 1):
        fault = f"  fault {t['fault']}" if t.get("fault") else ""
        lines.append(f"{n}. {t['upstream']:<14} {t['outcome']:<12} "
                     f"{t.get('duration_ms', 0):8.1f} ms{fault}")
    if not lines:
        lines.append("no upstream try: " + (f"answered from the cache ({flow['cache']})"
                                            if flow.get("cache") else flow.get("error") or
                                            "bridge answered itself"))
    return "\n".join(lines)


def summary(flow: dict) -> str:
    status = flow.get("status") if flow.get("status") is not None else "---"
    extra = [f"error {flow['error']}"] if flow.get("error") else []
    extra += [f"cache {flow['cache']}"] if flow.get("cache") else []
    extra += [f"faults {', '.join(flow['faults'])}"] if flow.get("faults") else []
    extra += [cost_of(flow)] if cost_of(flow) else []
    return (f"{flow.get('method')} {path_of(flow.get('url', ''))}  →  {status}  "
            f"{flow.get('duration_ms', 0):.1f} ms  route {flow.get('route') or '-'}  "
            f"upstream {flow.get('upstream') or '-'}" + ("\n" + "  ·  ".join(extra) if extra else ""))


def json_tree(label: str, body: str) -> Tree | Static:
    """A folding tree of a JSON body (top level open), or the text when it isn't JSON."""
    try:
        value = json.loads(body)
    except ValueError:
        return Static(body, classes="body-text")
    tree: Tree = Tree(label, classes="json-tree")
    tree.show_root = False
    _grow(tree.root, value, depth=0)
    tree.root.expand()
    return tree


def _grow(node, value, depth: int) -> None:
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    for key, child in items[:FOLD_ITEMS]:
        name = json.dumps(key) if isinstance(value, dict) else f"[{key}]"
        if isinstance(child, dict | list) and child:
            sub = node.add(f"{name}: {'{…}' if isinstance(child, dict) else f'[{len(child)}]'}",
                           expand=depth < 1)
            _grow(sub, child, depth + 1)
        else:
            node.add_leaf(f"{name}: {json.dumps(child, ensure_ascii=False)}")
    if len(items) > FOLD_ITEMS:
        node.add_leaf(f"… {len(items) - FOLD_ITEMS} more")


def _headers(pairs: list) -> str:
    return "\n".join(f"{k}: {v}" for k, v in pairs) or "(none)"


class FlowScreen(Screen):
    """The flow view; `escape` goes back to the traffic."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "back")]

    def __init__(self, doc: dict) -> None:
        super().__init__()
        self.doc = doc

    def compose(self) -> ComposeResult:
        flow = self.doc["flow"]
        with VerticalScroll(id="flow-detail"):
            yield Static(summary(flow), id="flow-summary")
            yield Static("tries", classes="section-title")
            yield Static(timeline(flow), id="flow-timeline")
            for side in ("request", "response"):
                yield from self._part(side, self.doc.get(side))
        yield Footer()

    def _part(self, side: str, part: dict | None):
        if part is None:
            yield Static(f"{side}: none", classes="section-title")
            return
        with Collapsible(title=f"{side} headers", collapsed=side == "request"):
            yield Static(_headers(part["headers"]))
        note = (" (streamed, not kept)" if part.get("streamed") else
                f" (first {len(part['body'] or '')} of {part['size']} bytes)" if part.get("truncated")
                else "")
        with Collapsible(title=f"{side} body{note}", collapsed=False):
            if part.get("body"):
                yield json_tree(f"{side} body", part["body"])
            else:
                yield Static("(empty)")
