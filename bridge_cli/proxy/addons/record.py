"""Step 8 of a request: turn the finished flow into a FlowEvent on the bus.

The flow log, `bridge up`'s live lines and the control API's counters subscribe to the
bus; secrets are redacted here, once, before any of them sees the event.
"""

from __future__ import annotations

import time

from mitmproxy import http

from bridge_cli.engine.events import FlowEvent
from bridge_cli.engine.money import usd
from bridge_cli.engine.redact import redact_headers, redact_url
from bridge_cli.proxy.flowmeta import meta
from bridge_cli.proxy.state import LiveState


class RecordAddon:
    """Publishes one FlowEvent per finished flow; added last so it sees every decision."""

    def __init__(self, state: LiveState) -> None:
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        if m is not None and flow.response is None:
            m["sent_at"] = time.monotonic()  # pass-through: mitmproxy connects after this

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        if m is None or m.get("route") or "x-bridge-request-id" in flow.response.headers:
            return
        # Pass-through: bridge's time is the hooks before sending plus the hooks until now.
        before = m.get("sent_at", m["t0"]) - m["t0"]
        after = max(0.0, time.time() - flow.response.timestamp_start)
        flow.response.headers["x-bridge-request-id"] = m["id"]
        flow.response.headers["x-bridge-overhead-ms"] = f"{(before + after) * 1000:.2f}"

    def response(self, flow: http.HTTPFlow) -> None:
        self._publish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._publish(flow)

    def _publish(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        if m is None or m.get("published"):
            return
        m["published"] = True
        resp = flow.response
        handoff = m.get("handoff")
        error = m.get("error")
        if error is None and flow.error is not None and not m.get("faults"):
            error = "client_gone" if "client disconnected" in str(flow.error).lower() else "proxy_error"
        if handoff is not None and handoff.outcome not in ("complete", "pending"):
            error = error or f"stream_{handoff.outcome}"
        self.state.bus.publish(
            FlowEvent(
                id=m["id"],
                ts=m["ts"],
                route=m.get("route"),
                method=m["method"],
                url=redact_url(m["url"]),
                status=resp.status_code if resp is not None else None,
                upstream=m.get("upstream") or (None if m.get("route") else flow.request.pretty_host),
                duration_ms=round((time.monotonic() - m["t0"]) * 1000, 3),
                overhead_ms=_float(resp.headers.get("x-bridge-overhead-ms")) if resp else None,
                attempts=m.get("attempts", 1 if resp is not None else 0),
                tries=tuple(m.get("tries", ())),
                error=error,
                streamed=bool(m.get("streamed")),
                request_bytes=m["request_bytes"],
                response_bytes=(handoff.bytes_sent if handoff else
                                len(resp.raw_content or b"") if resp is not None and resp.raw_content else 0),
                request_headers=tuple(redact_headers(flow.request.headers.items(multi=True))),
                faults=tuple(m.get("faults", ())),
                cache=m.get("cache"),
                cost_usd=usd(m["spend"].cost) if m.get("spend") else None,
                spend_status=m["spend"].status if m.get("spend") else None,
            )
        )


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
