"""Step 1 of a request: find its route (by listener or host/path), give it an id, and
start its record (proxy/flowstate.py)."""

from __future__ import annotations

import time
import uuid

from mitmproxy import http

from bridge_cli.engine.replies import error_reply
from bridge_cli.engine.routing import match_route
from bridge_cli.proxy.flowstate import KEY, FlowState
from bridge_cli.proxy.respond import apply_reply
from bridge_cli.proxy.state import LiveState


class RouteAddon:
    """Gives each flow its FlowState: id, the config it runs on, its route."""

    def __init__(self, state: LiveState) -> None:
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        config = self.state.config  # the flow keeps this one across a reload
        spec = flow.client_conn.proxy_mode.full_spec
        st = FlowState(
            id=uuid.uuid4().hex[:12],
            config=config,
            t0=time.monotonic(),
            ts=time.time(),
            method=flow.request.method,
            url=_client_url(flow),  # before any retargeting
            request_bytes=len(flow.request.raw_content or b""),
        )
        flow.metadata[KEY] = st
        self.state.inflight += 1  # until its FlowEvent is published (LiveState.on_event)
        if self.state.draining:
            apply_reply(flow, error_reply("bridge_stopping", "bridge is shutting down: it "
                                          "finishes the requests in flight and takes no new "
                                          "ones; send this one again once it is back"))
            flow.response.headers["connection"] = "close"
            return
        if spec.startswith("reverse:"):
            route = self.state.route_for_mode(spec, config)
            if route is None:  # its route was removed by a reload while the listener closes
                apply_reply(flow, error_reply("no_route", "this listener has no route any more"))
                return
        else:
            route = match_route(config, flow.request.pretty_host, flow.request.path)
        st.route = route


def _client_url(flow: http.HTTPFlow) -> str:
    """The URL as the client asked for it: on a reverse listener, its own address (the
    mode's target is only a placeholder)."""
    if flow.client_conn.proxy_mode.full_spec.startswith("reverse:") and flow.client_conn.sockname:
        host, port = flow.client_conn.sockname[:2]
        return f"http://{host}:{port}{flow.request.path}"
    return flow.request.pretty_url
