"""Answering a flow with a complete response: buffered directly, or through the forwarder."""

from __future__ import annotations

import time

from mitmproxy import http
from mitmproxy.net.http import status_codes

from bridge_cli.proxy.flowmeta import bridge_headers, overhead_ms
from bridge_cli.proxy.forwarder import PATH_PREFIX, Forwarder, Handoff
from bridge_cli.proxy.outbound import UpstreamResponse


def respond(flow: http.HTTPFlow, m: dict, up: UpstreamResponse, forwarder: Forwarder,
            handoff: Handoff) -> None:
    """A buffered body with nothing to shape or replay becomes flow.response at once; a
    stream, a shaped body or a paced replay goes through the forwarder (`handoff`)."""
    if up.body is not None and handoff.shaping is None and handoff.events is None:
        # Every header in one list, one Headers object: this runs once per request.
        head = flow.request.method == "HEAD"
        ours = {k for k, _ in bridge_headers(m)} | {"x-bridge-overhead-ms"}
        if not head:
            ours.add("content-length")
        fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in up.headers
                  if k.lower() not in ours]
        if not head:
            fields.append((b"content-length", str(len(up.body)).encode()))
        fields += [(k.encode(), v.encode()) for k, v in bridge_headers(m)]
        fields.append((b"x-bridge-overhead-ms", f"{overhead_ms(m):.2f}".encode()))
        now = time.time()
        reason = status_codes.RESPONSES.get(up.status, "").encode()
        resp = http.Response(b"HTTP/1.1", up.status, reason, http.Headers(fields), None, None,
                             now, now)
        if not head:
            resp.raw_content = up.body
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
    flow.request.headers["content-length"] = "0"  # the body stays here; the hop sends none
    flow.request.headers.pop("transfer-encoding", None)
