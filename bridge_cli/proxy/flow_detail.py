"""The last flows in full, for the dashboard's flow view (`GET /api/v1/flows/{id}`).

The event stream carries summaries only; headers and bodies of the most recent flows are
kept here, in a ring bounded by count and by bytes, and served on request. Headers are
redacted as they are kept; bodies are capped, and decoded and redacted only when asked for,
so the request path pays for one dict and two references.
"""

from __future__ import annotations

from collections import OrderedDict

from mitmproxy import http
from mitmproxy.net import encoding

from bridge_cli.common.redact import redact_headers, redact_text
from bridge_cli.engine.events import FlowEvent
from bridge_cli.proxy.flowstate import state_of

KEEP = 500  # flows kept in full
BODY_CAP = 64 * 1024  # bytes of each body kept
MAX_BYTES = 32 * 1024 * 1024  # bytes of bodies kept in all


class FlowDetails:
    """Ring of recent flows: the FlowEvent (from the bus) and headers and bodies (from the
    addon below), joined by request id."""

    def __init__(self, keep: int = KEEP, body_cap: int = BODY_CAP,
                 max_bytes: int = MAX_BYTES) -> None:
        self.keep = keep
        self.body_cap = body_cap
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._bytes = 0

    def _entry(self, flow_id: str) -> dict:
        entry = self._items.get(flow_id)
        if entry is None:
            entry = self._items[flow_id] = {"event": None, "request": None, "response": None,
                                            "bytes": 0}
            while len(self._items) > self.keep or (self._bytes > self.max_bytes and
                                                   len(self._items) > 1):
                _, old = self._items.popitem(last=False)
                self._bytes -= old["bytes"]
        return entry

    def on_event(self, event) -> None:
        """Bus subscriber: keep each flow's summary."""
        if isinstance(event, FlowEvent):
            self._entry(event.id)["event"] = event

    def capture(self, flow: http.HTTPFlow) -> None:
        """Keep the flow's headers (redacted) and the first body_cap bytes of its bodies."""
        st = state_of(flow)
        if st is None:
            return
        entry = self._entry(st.id)
        entry["request"] = self._part(flow.request)
        entry["response"] = self._part(flow.response) if flow.response is not None else None
        added = sum(len(p["raw"] or b"") for p in (entry["request"], entry["response"]) if p)
        entry["bytes"] += added
        self._bytes += added

    def _part(self, message: http.Message) -> dict:
        streamed = bool(getattr(message, "stream", False))
        raw = None if streamed else message.raw_content
        return {"headers": redact_headers(message.headers.items(multi=True)),
                "raw": raw[:self.body_cap] if raw else None,
                "size": len(raw) if raw else 0, "streamed": streamed,
                "encoding": message.headers.get("content-encoding"),
                "content_type": message.headers.get("content-type")}

    def get(self, flow_id: str) -> dict | None:
        """The flow's document for the control API, None when it is no longer kept."""
        entry = self._items.get(flow_id)
        if entry is None or entry["event"] is None:
            return None
        return {"id": flow_id, "flow": entry["event"].to_dict(),
                "request": _document(entry["request"], self.body_cap),
                "response": _document(entry["response"], self.body_cap)}


def _document(part: dict | None, cap: int) -> dict | None:
    """A kept message as JSON: headers as pairs, the body as redacted text."""
    if part is None:
        return None
    raw, body = part["raw"], None
    truncated = part["size"] > cap
    if raw is not None:
        if part["encoding"] and not truncated:
            try:  # a cut compressed body can't be decoded: it stays as it came
                raw = encoding.decode(raw, part["encoding"])
            except ValueError:
                pass
        body = redact_text(raw[:cap].decode("utf-8", "replace"))
    return {"headers": [list(h) for h in part["headers"]], "body": body,
            "size": part["size"], "truncated": truncated, "streamed": part["streamed"],
            "content_type": part["content_type"]}


class FlowDetailAddon:
    """Runs after RecordAddon: keeps each finished flow's headers and bodies."""

    def __init__(self, details: FlowDetails) -> None:
        self.details = details

    def response(self, flow: http.HTTPFlow) -> None:
        self.details.capture(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.details.capture(flow)
