"""Answering a flow: bridge's own replies, complete bodies, and streams via the forwarder."""

from __future__ import annotations

import time

from mitmproxy import http
from mitmproxy.net.http import status_codes

from bridge_cli.engine.replies import Reply
from bridge_cli.engine.streams import ordered
from bridge_cli.proxy.flowstate import FlowState, state_of
from bridge_cli.proxy.forwarder import PATH_PREFIX, Forwarder, Handoff
from bridge_cli.proxy.outbound import HOP_BY_HOP, UpstreamResponse


def apply_reply(flow: http.HTTPFlow, reply: Reply) -> None:
    """Answer the flow with a reply of bridge's own (no upstream contacted after this)."""
    st = state_of(flow)
    headers = [(k.encode(), v.encode()) for k, v in reply.headers]
    flow.response = http.Response.make(reply.status, reply.body, headers)
    if st is not None:
        st.error = dict(reply.headers).get("x-bridge-error")
        for k, v in st.bridge_headers():
            flow.response.headers[k] = v
        flow.response.headers["x-bridge-overhead-ms"] = f"{st.overhead_ms():.2f}"


def respond(flow: http.HTTPFlow, st: FlowState, up: UpstreamResponse, forwarder: Forwarder,
            handoff: Handoff) -> None:
    """A buffered body with nothing to shape or replay becomes flow.response at once; a
    stream, a shaped body or a paced replay goes through the forwarder (`handoff`)."""
    if up.body is not None and handoff.shaping is None and handoff.events is None:
        flow.response = _buffered(flow.request.method == "HEAD", st, up)
        return
    # Park the response with the forwarder and point the flow at it; mitmproxy relays the
    # forwarder's answer natively (stream_headers below, from responseheaders).
    handoff.observers = ordered(st.stream.observers)
    token = forwarder.register(handoff)
    st.stream.handoff = handoff
    st.stream.streamed = True
    flow.request.scheme = "http"
    flow.request.host = "127.0.0.1"
    flow.request.port = forwarder.port
    flow.request.path = PATH_PREFIX + token
    flow.request.raw_content = b""
    flow.request.headers["content-length"] = "0"  # the body stays here; the hop sends none
    flow.request.headers.pop("transfer-encoding", None)


def _buffered(head: bool, st: FlowState, up: UpstreamResponse) -> http.Response:
    # Every header in one list, one Headers object: this runs once per request.
    ours = st.bridge_headers()
    skip = {k for k, _ in ours} | {"x-bridge-overhead-ms"}
    if not head:
        skip.add("content-length")
    fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in up.headers
              if k.lower() not in skip]
    if not head:
        fields.append((b"content-length", str(len(up.body)).encode()))
    fields += [(k.encode(), v.encode()) for k, v in ours]
    fields.append((b"x-bridge-overhead-ms", f"{st.overhead_ms():.2f}".encode()))
    now = time.time()
    reason = status_codes.RESPONSES.get(up.status, "").encode()
    resp = http.Response(b"HTTP/1.1", up.status, reason, http.Headers(fields), None, None,
                         now, now)
    if not head:
        resp.raw_content = up.body
    return resp


def stream_headers(flow: http.HTTPFlow, st: FlowState) -> None:
    """In responseheaders: relay the forwarder's stream natively, under the upstream's own
    headers (not the forwarder's) plus bridge's."""
    handoff = st.stream.handoff
    framing = [(k, v) for k, v in flow.response.headers.items(multi=True)
               if k.lower() in ("transfer-encoding", "content-length")]
    headers = http.Headers()
    for k, v in handoff.response.headers:
        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
            headers.add(k, v)
    for k, v in framing:
        headers.add(k, v)
    for k, v in st.bridge_headers():
        headers[k] = v
    headers["x-bridge-overhead-ms"] = f"{st.overhead_ms():.2f}"
    flow.response.headers = headers
    flow.response.stream = True
