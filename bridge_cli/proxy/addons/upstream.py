"""Step 4 of a request: the attempt loop, applied to the flow.

The engine's AttemptLoop decides which upstream gets each try and when to give up, and
`conclude` what the client gets; this addon makes the tries (proxy/outbound.py) and
applies the result: buffered bodies directly, streams through the forwarder, failures as
bridge's JSON errors.
"""

from __future__ import annotations

from mitmproxy import http

from bridge_cli.common.jsondoc import json_object
from bridge_cli.config.model import Route
from bridge_cli.engine.attempts import BREAKER_OPEN, AttemptLoop, Outcome
from bridge_cli.engine.chaos import Shaping
from bridge_cli.engine.clock import Clock
from bridge_cli.engine.llm.errors import error_meaning
from bridge_cli.engine.replies import conclude
from bridge_cli.proxy.faults import client_fault, corrupt_buffered, faulted_try
from bridge_cli.proxy.flowstate import FlowState, routed, state_of
from bridge_cli.proxy.forwarder import Forwarder, Handoff
from bridge_cli.proxy.outbound import OutboundRequest, send_once
from bridge_cli.proxy.respond import apply_reply, respond, stream_headers
from bridge_cli.proxy.state import LiveState
from bridge_cli.proxy.stream_recovery import llm_parts

STREAM_TYPES = ("text/event-stream", "application/x-ndjson")


class UpstreamAddon:
    """Runs every routed request through the attempt loop."""

    def __init__(self, state: LiveState, forwarder: Forwarder, clock: Clock) -> None:
        self.state = state
        self.forwarder = forwarder
        self.clock = clock  # backoff and fault delays sleep on it

    async def request(self, flow: http.HTTPFlow) -> None:
        if (got := routed(flow)) is None:
            return  # pass-through (mitmproxy forwards it natively), or already answered
        st, route = got
        req = OutboundRequest(
            method=flow.request.method,
            path=flow.request.path,
            headers=tuple((k, v) for k, v in flow.request.headers.items(multi=True)),
            body=flow.request.raw_content or b"",
        )
        sleep = self._sleep_counted(st)
        gone = lambda: flow.client_conn.timestamp_end is not None  # noqa: E731
        rr = self.state.resilience.get(route.name)
        rr.budget.record_request()
        loop = AttemptLoop(route, sleep=sleep, rng=self.state.rng, guard=rr, budget=rr.budget,
                           client_gone=gone)
        order = rr.strategy.order(route.upstreams)
        result = await loop.run(req.method, order, self._sender(st, route, req, sleep, gone))
        st.tries.tries = tuple(result.tries)
        st.tries.attempts = sum(1 for t in result.tries if t.outcome != BREAKER_OPEN)
        st.tries.upstream = result.upstream.name if result.upstream else None
        final, shaping = result.final, result.final.shaping

        # `stage: client` faults replace the final answer, after bridge's own retries.
        hit = self.state.chaos.decide("client", route.name, st.tries.upstream, req.method,
                                      req.path, _lower(req.headers), st.faults.from_header,
                                      body=req.body)
        if hit is not None:
            st.faults.add(hit.names)
            final, shaping, error = await client_fault(hit, final, shaping, self.clock, sleep,
                                                       gone)
            st.error = error or st.error
            st.faults.raw_cut = st.faults.raw_cut or (hit.shaping is not None)
            if final is None:
                flow.kill()  # an injected reset or hang: the connection closes, no answer
                return
        c = conclude(route.name, st.tries.upstream, final.kind, final.fault, final.detail,
                     client_gone=result.client_gone, all_unavailable=result.all_unavailable)
        if c.action == "respond":
            llm, recovery = llm_parts(route, req, order, result.upstream, result.tries,
                                      self.state.session, rr, final.handle)
            self._apply_response(flow, st, final, shaping, llm, recovery)
        elif c.action == "reply":
            final.discard()
            apply_reply(flow, c.reply)
        else:  # an injected reset closes the client's connection, no answer
            st.error = c.error
            flow.kill()

    def _sender(self, st: FlowState, route: Route, req: OutboundRequest, sleep, gone):
        """One try on `upstream`: a fault may take its place, else the real call."""
        chaos, session = self.state.chaos, self.state.session
        headers = _lower(req.headers)
        # An LLM route (or one with first_token) holds a stream's headers until its first
        # data event; first_token bounds that wait when the client asked for a stream.
        hold = route.llm is not None or route.timeout.first_token is not None
        first_token = route.timeout.first_token if hold and _asks_stream(req.body) else None

        async def send(upstream, attempt) -> Outcome:
            hit = chaos.decide("upstream", route.name, upstream.name, req.method, req.path,
                               headers, st.faults.from_header, body=req.body)
            if hit is not None:
                st.faults.add(hit.names)
                outcome = await faulted_try(hit, route.timeout, sleep, gone, self.clock.monotonic)
                if outcome is not None:
                    return outcome
            outcome = await send_once(session, upstream, req, route.timeout,
                                      first_token=first_token, hold_sse=hold)
            st.tries.waited_s += outcome.duration
            if route.llm and outcome.status is not None and outcome.status >= 400:
                outcome.meaning = error_meaning(route.llm, outcome.status, outcome.handle.body)
            if hit is not None:
                outcome.shaping = hit.shaping
            return outcome

        return send

    def _sleep_counted(self, st: FlowState):
        async def sleep(seconds: float) -> None:
            st.tries.waited_s += seconds  # backoff is the route's policy, not bridge's overhead
            await self.clock.sleep(seconds)

        return sleep

    def _apply_response(self, flow: http.HTTPFlow, st: FlowState, final: Outcome,
                        shaping: Shaping | None, llm, recovery) -> None:
        up = final.handle
        shaping = corrupt_buffered(up, shaping)
        if shaping is not None and shaping.slow_first_byte:
            st.tries.waited_s += shaping.slow_first_byte  # the fault's wait, not overhead
        respond(flow, st, up, self.forwarder, Handoff(
            up, st.route.timeout.stream_idle, shaping=shaping, raw_cut=st.faults.raw_cut,
            llm=llm, recovery=recovery))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st is None:
            return
        if st.stream.handoff is not None:
            stream_headers(flow, st)
        elif flow.response.headers.get("content-type", "").lower().startswith(STREAM_TYPES):
            flow.response.stream = True  # pass-through: stream what looks like a stream
            st.stream.streamed = True


def _asks_stream(body: bytes) -> bool:
    doc = json_object(body) if body[:1] == b"{" else None
    return doc is not None and doc.get("stream") is True


def _lower(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers}
