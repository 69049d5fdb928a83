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
from bridge_cli.proxy.flowmeta import META, apply_reply, route_of
from bridge_cli.proxy.state import LiveState

HEADER = "x-bridge-fault"


class HeaderFaultAddon:
    """Turns an allowed `x-bridge-fault` header into a fault for this request only."""

    def __init__(self, state: LiveState) -> None:
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or HEADER not in flow.request.headers:
            return
        value = flow.request.headers.pop(HEADER)
        route = route_of(flow)
        m = flow.metadata.get(META)
        if route is None or m is None or not m["config"].chaos.allow_headers:
            return  # not allowed: dropped, never forwarded
        try:
            fault = parse_fault(parse_fault_header(value) | {"route": route.name}, m["config"])
        except (ValueError, UsageError) as e:
            apply_reply(flow, error_reply("bad_fault_header", f"{HEADER}: {e}"))
            return
        m["header_faults"] = (ActiveFault(fault, 0.0, "header"),)
