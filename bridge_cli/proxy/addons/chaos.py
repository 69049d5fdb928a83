"""Per-request faults from an `x-bridge-fault` request header (opt-in: chaos.allow_headers).

The header is always removed before the request goes upstream. The fault itself is
applied by the attempt loop like any other (proxy/addons/upstream.py).
"""

from __future__ import annotations

from mitmproxy import http

from bridge_cli.config.loader import parse_fault
from bridge_cli.engine.chaos import ActiveFault, parse_fault_header
from bridge_cli.engine.replies import error_reply
from bridge_cli.errors import UsageError
from bridge_cli.proxy.flowstate import state_of
from bridge_cli.proxy.respond import apply_reply

HEADER = "x-bridge-fault"


class HeaderFaultAddon:
    """Turns an allowed `x-bridge-fault` header into a fault for this request only."""

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or HEADER not in flow.request.headers:
            return
        value = flow.request.headers.pop(HEADER)
        st = state_of(flow)
        if st is None or st.route is None or not st.config.chaos.allow_headers:
            return  # not allowed: dropped, never forwarded
        try:
            fault = parse_fault(parse_fault_header(value) | {"route": st.route.name}, st.config)
        except (ValueError, UsageError) as e:
            apply_reply(flow, error_reply("bad_fault_header", f"{HEADER}: {e}"))
            return
        st.faults.from_header = (ActiveFault(fault, 0.0, "header"),)
