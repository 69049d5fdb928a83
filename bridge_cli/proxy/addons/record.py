"""Step 8 of a request: turn the finished flow into a FlowEvent on the bus.

The flow log, `bridge up`'s live lines and the control API's counters subscribe to the
bus; secrets are redacted here, once, before any of them sees the event.
"""

from __future__ import annotations

import time

from mitmproxy import http

from bridge_cli.common.redact import redact_headers, redact_url
from bridge_cli.engine.events import EventBus, FlowEvent
from bridge_cli.engine.money import usd
from bridge_cli.proxy.flowstate import FlowState, state_of


class RecordAddon:
    """Publishes one FlowEvent per finished flow; added last so it sees every decision."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def request(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st is not None and flow.response is None:
            st.sent_at = time.monotonic()  # pass-through: mitmproxy connects after this

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st is None or st.route is not None or "x-bridge-request-id" in flow.response.headers:
            return
        # Pass-through: bridge's time is the hooks before sending plus the hooks until now.
        before = (st.sent_at or st.t0) - st.t0
        after = max(0.0, time.time() - flow.response.timestamp_start)
        flow.response.headers["x-bridge-request-id"] = st.id
        flow.response.headers["x-bridge-overhead-ms"] = f"{(before + after) * 1000:.2f}"

    def response(self, flow: http.HTTPFlow) -> None:
        self._publish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._publish(flow)

    def _publish(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st is None or st.published:
            return
        st.published = True
        self.bus.publish(flow_event(flow, st))


def flow_event(flow: http.HTTPFlow, st: FlowState) -> FlowEvent:
    """The FlowEvent of a finished flow, secrets redacted."""
    resp = flow.response
    handoff = st.stream.handoff
    error = st.error
    if error is None and flow.error is not None and not st.faults.fired:
        error = "client_gone" if "client disconnected" in str(flow.error).lower() else "proxy_error"
    if handoff is not None and handoff.outcome not in ("complete", "pending"):
        error = error or f"stream_{handoff.outcome}"
    priced = st.spend.priced
    route = st.route.name if st.route is not None else None
    return FlowEvent(
        id=st.id,
        ts=st.ts,
        route=route,
        method=st.method,
        url=redact_url(st.url),
        status=resp.status_code if resp is not None else None,
        upstream=st.tries.upstream or (None if route else flow.request.pretty_host),
        duration_ms=round((time.monotonic() - st.t0) * 1000, 3),
        overhead_ms=_float(resp.headers.get("x-bridge-overhead-ms")) if resp else None,
        attempts=st.tries.attempts if st.tries.attempts is not None else
        (1 if resp is not None else 0),
        # a broken stream's continuation tries follow the attempt loop's
        tries=st.tries.tries + (tuple(handoff.recovery.tries)
                                if handoff is not None and handoff.recovery else ()),
        error=error,
        streamed=st.stream.streamed,
        request_bytes=st.request_bytes,
        response_bytes=(handoff.bytes_sent if handoff else
                        len(resp.raw_content or b"") if resp is not None and resp.raw_content
                        else 0),
        request_headers=tuple(redact_headers(flow.request.headers.items(multi=True))),
        faults=tuple(st.faults.fired),
        cache=st.cache.status,
        cost_usd=usd(priced.cost) if priced else None,
        spend_status=priced.status if priced else None,
        drift=tuple(st.drift),
    )


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
