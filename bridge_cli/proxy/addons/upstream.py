"""Step 4 of a request: the attempt loop, applied to the flow.

The engine's AttemptLoop decides which upstream gets each try and when to give up; this
addon only makes the tries (proxy/outbound.py) and turns the result into the flow's
response: buffered bodies directly, streams through the forwarder, failures as bridge's
JSON errors.
"""

from __future__ import annotations

import asyncio
import dataclasses

from mitmproxy import http

from bridge_cli.engine.attempts import (
    BREAKER_OPEN,
    RESET,
    AttemptLoop,
    Outcome,
)
from bridge_cli.engine.chaos import Shaping, corrupt_body
from bridge_cli.engine.pricing import UsageStripper
from bridge_cli.engine.replies import error_reply, failed_try_reply
from bridge_cli.proxy.faults import client_hang, faulted_try, injected_response, wait_unless_gone
from bridge_cli.proxy.flowmeta import apply_reply, bridge_headers, meta, overhead_ms, route_of
from bridge_cli.proxy.forwarder import Forwarder, Handoff
from bridge_cli.proxy.outbound import HOP_BY_HOP, OutboundRequest, UpstreamResponse, send_once
from bridge_cli.proxy.respond import respond
from bridge_cli.proxy.state import LiveState


class UpstreamAddon:
    """Runs every routed request through the attempt loop."""

    def __init__(self, state: LiveState, forwarder: Forwarder) -> None:
        self.state = state
        self.forwarder = forwarder

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        route = route_of(flow)
        m = meta(flow)
        if route is None or "handoff" in m:
            return  # pass-through (mitmproxy forwards it natively), or already answered
        req = OutboundRequest(
            method=flow.request.method,
            path=flow.request.path,
            headers=tuple((k, v) for k, v in flow.request.headers.items(multi=True)),
            body=flow.request.raw_content or b"",
        )
        session = self.state.session
        chaos = self.state.chaos
        sleep = self._sleep_counted(m)
        gone = lambda: flow.client_conn.timestamp_end is not None  # noqa: E731
        lower_headers = {k.lower(): v for k, v in req.headers}
        extra = m.get("header_faults", ())
        m.setdefault("faults", [])

        async def send(upstream, attempt) -> Outcome:
            hit = chaos.decide("upstream", route.name, upstream.name, req.method, req.path,
                               lower_headers, extra)
            if hit is not None:
                m["faults"].extend(n for n in hit.names if n not in m["faults"])
                outcome = await faulted_try(hit, route.timeout, sleep, gone)
                if outcome is not None:
                    return outcome
            outcome = await send_once(session, upstream, req, route.timeout)
            m["upstream_s"] += outcome.duration
            if hit is not None:
                outcome.shaping = hit.shaping
            return outcome

        rr = self.state.resilience.get(route.name)
        rr.budget.record_request()
        loop = AttemptLoop(route, sleep=sleep, rng=self.state.rng, guard=rr, budget=rr.budget,
                           client_gone=gone)
        result = await loop.run(req.method, rr.strategy.order(route.upstreams), send)
        m["tries"] = result.tries
        m["attempts"] = sum(1 for t in result.tries if t.outcome != BREAKER_OPEN)
        m["upstream"] = result.upstream.name if result.upstream else None
        final = result.final

        # `stage: client` faults replace the final answer, after bridge's own retries.
        hit = chaos.decide("client", route.name, m["upstream"], req.method, req.path,
                           lower_headers, extra)
        shaping = final.shaping
        if hit is not None:
            m["faults"].extend(n for n in hit.names if n not in m["faults"])
            if hit.delay:
                await wait_unless_gone(hit.delay, sleep, gone)
            if hit.terminal:
                final.discard()
                if hit.hang:
                    await client_hang(hit, gone)
                if hit.reset or hit.hang:
                    m["error"] = "injected_reset" if hit.reset else "injected_hang"
                    flow.kill()
                    return
                final = Outcome("response", hit.status, handle=injected_response(hit),
                                fault=hit.names[0])
            if hit.shaping is not None:
                shaping = hit.shaping if shaping is None else shaping.merge(hit.shaping)
                m["raw_cut"] = True  # the client sees the cut itself, no in-band error

        if result.client_gone:
            final.discard()
            apply_reply(flow, error_reply("client_gone", "the client went away; no more tries"))
        elif result.all_unavailable and final.kind != "response":
            apply_reply(flow, error_reply(
                "all_upstreams_unavailable",
                f"every upstream of route '{route.name}' has an open circuit breaker"))
        elif final.kind == "response":
            self._apply_response(flow, m, final.handle, route.timeout.total, shaping)
        elif final.kind == RESET and final.fault is not None:
            m["error"] = "injected_reset"
            flow.kill()  # an injected reset closes the client's connection, no answer
        else:
            apply_reply(flow, failed_try_reply(route.name, m["upstream"], final.kind, final.detail))

    def _sleep_counted(self, m):
        async def sleep(seconds: float) -> None:
            # Backoff is the route's policy, not bridge's overhead.
            m["upstream_s"] += seconds
            await asyncio.sleep(seconds)

        return sleep

    def _apply_response(self, flow: http.HTTPFlow, m: dict, up: UpstreamResponse,
                        idle_timeout: float, shaping: Shaping | None = None) -> None:
        if shaping is not None and shaping.corrupt and up.body is not None:
            ctype = dict((k.lower(), v) for k, v in up.headers).get("content-type", "")
            up.body = corrupt_body(up.body, ctype)
            shaping = dataclasses.replace(shaping, corrupt=False)
            if shaping == Shaping():
                shaping = None
        if shaping is not None and shaping.slow_first_byte:
            m["upstream_s"] += shaping.slow_first_byte  # the fault's wait, not bridge's overhead
        su = m.get("stream_usage")
        respond(flow, m, up, self.forwarder, Handoff(
            up, idle_timeout, shaping=shaping, raw_cut=bool(m.get("raw_cut")),
            capture=m.get("capture"), observe=su.feed if su is not None else None,
            transform=UsageStripper() if m.get("strip_usage") else None))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        if m is None:
            return
        handoff: Handoff | None = m.get("handoff")
        if handoff is None:
            # Pass-through traffic: stream what looks like a stream, natively.
            ctype = flow.response.headers.get("content-type", "").lower()
            if ctype.startswith(("text/event-stream", "application/x-ndjson")):
                flow.response.stream = True
                m["streamed"] = True
            return
        # Show the client the upstream's headers, not the forwarder's.
        framing = [(k, v) for k, v in flow.response.headers.items(multi=True)
                   if k.lower() in ("transfer-encoding", "content-length")]
        headers = http.Headers()
        for k, v in handoff.response.headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                headers.add(k, v)
        for k, v in framing:
            headers.add(k, v)
        for k, v in bridge_headers(m):
            headers[k] = v
        headers["x-bridge-overhead-ms"] = f"{overhead_ms(m):.2f}"
        flow.response.headers = headers
        flow.response.stream = True
