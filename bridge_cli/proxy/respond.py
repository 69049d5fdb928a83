"""Answering a flow with a complete response: buffered directly, or through the forwarder."""

from __future__ import annotations

from mitmproxy import http

from bridge_cli.proxy.flowmeta import bridge_headers, overhead_ms
from bridge_cli.proxy.forwarder import PATH_PREFIX, Forwarder, Handoff
from bridge_cli.proxy.outbound import UpstreamResponse


def respond(flow: http.HTTPFlow, m: dict, up: UpstreamResponse, forwarder: Forwarder,
            handoff: Handoff) -> None:
    """A buffered body with nothing to shape or replay becomes flow.response at once; a
    stream, a shaped body or a paced replay goes through the forwarder (`handoff`)."""
    if up.body is not None and handoff.shaping is None and handoff.events is None:
        resp = http.Response.make(up.status, b"", [(k.encode("latin-1"), v.encode("latin-1"))
                                                   for k, v in up.headers])
        if flow.request.method != "HEAD":
            resp.raw_content = up.body
            resp.headers["content-length"] = str(len(up.body))
        for k, v in bridge_headers(m):
            resp.headers[k] = v
        resp.headers["x-bridge-overhead-ms"] = f"{overhead_ms(m):.2f}"
        flow.response = resp
        return
    # Park the response with the forwarder and point the flow at it; mitmproxy relays the
    # forwarder's answer natively (UpstreamAddon.responseheaders sets stream = True).
    token = forwarder.register(handoff)
    m["handoff"] = handoff
    m["streamed"] = True
    flow.request.scheme = "http"
    flow.request.host = "127.0.0.1"
    flow.request.port = forwarder.port
    flow.request.path = PATH_PREFIX + token
    flow.request.raw_content = b""
