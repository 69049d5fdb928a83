"""Step 7 of a request: price the answer once it is complete (streamed too) and hand its
settlement to the settler (proxy/settler.py), which settles the reservation, writes the
ledger and checks alerts behind the request. Decisions: engine/spend.py; reservations:
addons/budget.py."""

from __future__ import annotations

import json
import logging

from mitmproxy import http

from bridge_cli.engine import spend as policy
from bridge_cli.engine.clock import Clock
from bridge_cli.engine.pricing import Priced, StreamUsage, UsageStripper
from bridge_cli.engine.replies import error_reply
from bridge_cli.proxy.flowstate import FlowState, routed, state_of
from bridge_cli.proxy.respond import apply_reply
from bridge_cli.proxy.settler import Settlement, Settler

log = logging.getLogger("bridge.spend")


class SpendAddon:
    """Usage pricing of every answer (streams too)."""

    def __init__(self, settler: Settler, clock: Clock) -> None:
        self.settler = settler  # settles, writes the ledger and alerts behind the request
        self.clock = clock

    def request(self, flow: http.HTTPFlow) -> None:
        if (got := routed(flow)) is None:
            return
        st, route = got
        if route.spend is None:
            return  # nothing to price
        try:
            self._prepare(flow, st, route.spend)
        except Exception as e:
            # mitmproxy would log this and forward the request: under a blocking budget
            # that would be a call nobody reserved for. Refuse it instead.
            log.exception("spend: could not read request %s", st.id)
            if any(b.action == "block" for _, b in policy.budgets_of(route, st.config)):
                apply_reply(flow, error_reply(
                    "bridge_internal", f"bridge could not read this request for its budget "
                    f"({type(e).__name__}: {e}); it was not sent"))

    def _prepare(self, flow: http.HTTPFlow, st: FlowState, spend) -> None:
        if spend.provider:
            st.spend.request_model = policy.request_model(flow.request.path,
                                                          flow.request.raw_content or b"")
            st.spend.usage = StreamUsage()  # reads the answer if it streams
            st.stream.observers.append(st.spend.usage)
            if spend.inject_usage and spend.provider == "openai":
                self._ask_for_usage(flow, st)

    def _ask_for_usage(self, flow: http.HTTPFlow, st: FlowState) -> None:
        body = policy.with_usage_requested(flow.request.raw_content or b"")
        if body is not None:
            flow.request.raw_content = body
            flow.request.headers["content-length"] = str(len(body))
            st.spend.strip_usage = True
            st.stream.observers.append(UsageStripper())  # the client didn't ask for it

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st is None or st.route is None or st.route.spend is None or st.spend.done:
            return
        st.spend.done = True
        reservation = st.spend.reservation
        try:
            priced = policy.price_flow(st.route.spend, st.config.pricing, _facts(flow, st))
        except Exception as e:  # unpriced, so a held reservation settles at its amount
            log.exception("spend: could not price the answer of request %s", st.id)
            priced = Priced(0, "unpriced", reason=f"bridge could not price the answer "
                            f"({type(e).__name__}: {e})")
        st.spend.priced = policy.settle(priced, reservation.amount if reservation else None)
        held = tuple(dict.fromkeys(s for s, _ in reservation.held)) if reservation else ()
        row = policy.ledger_row(self.clock.wall(), st.id, st.route.name, st.tries.upstream,
                                st.spend.priced, flow.request.path, held)
        self.settler.submit(Settlement(st.id, reservation, st.spend.priced, row,
                                       tuple(policy.budgets_of(st.route, st.config))))


def _facts(flow: http.HTTPFlow, st: FlowState) -> policy.SpendFacts:
    resp = flow.response
    streamed = st.stream.handoff is not None
    return policy.SpendFacts(
        method=flow.request.method, url=st.url, cache=st.cache.status, error=st.error,
        status=resp.status_code if resp is not None else None,
        faulted_without_upstream=bool(st.faults.fired) and not st.tries.upstream,
        streamed=streamed, stream_usage=st.spend.usage, served_body=st.cache.served_body,
        body=None if streamed or st.cache.served_body is not None else _json_body(resp),
        request_model=_asked_model(st))


def _asked_model(st: FlowState) -> str | None:
    """The model the answering upstream was asked for: its entry's `model:` when it has
    one (a fallback entry rewrites the request), else the one the client named."""
    entry = next((u for u in st.route.upstreams if u.name == st.tries.upstream), None)
    return (entry.model if entry is not None and entry.model else None) or st.spend.request_model


def _json_body(resp: http.Response | None):
    if resp is None:
        return None
    try:
        return json.loads(resp.get_content(strict=False) or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
