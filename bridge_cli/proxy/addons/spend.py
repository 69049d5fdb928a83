"""Step 7 of a request: price the answer once it is complete (streamed too), settle its
reservation, write the ledger. Decisions: engine/spend.py; reservations: addons/budget.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from mitmproxy import http

from bridge_cli.common.store import Store
from bridge_cli.engine import spend as policy
from bridge_cli.engine.budget import Budgets
from bridge_cli.engine.events import BudgetEvent, EventBus
from bridge_cli.engine.money import usd
from bridge_cli.engine.pricing import StreamUsage, UsageStripper
from bridge_cli.errors import StoreError
from bridge_cli.proxy.flowstate import FlowState, routed, state_of
from bridge_cli.store.ledger import Ledger

log = logging.getLogger("bridge.spend")


class SpendAddon:
    """Usage pricing of every answer (streams too), the spend ledger and budget alerts."""

    def __init__(self, bus: EventBus, store: Store, budgets: Budgets) -> None:
        self.bus = bus
        self.ledger = Ledger(store)
        self.budgets = budgets

    def request(self, flow: http.HTTPFlow) -> None:
        if (got := routed(flow)) is None:
            return
        st, route = got
        spend = route.spend
        if spend is None:
            return  # nothing to price
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
        priced = policy.price_flow(st.route.spend, st.config.pricing, _facts(flow, st))
        st.spend.priced = policy.settle(priced, reservation.amount if reservation else None)
        asyncio.get_running_loop().run_in_executor(None, self._settle, st, flow.request.path)

    def _settle(self, st: FlowState, path: str) -> None:
        """Off the event loop: settle the reservation, write the ledger, check alerts."""
        priced, reservation, route = st.spend.priced, st.spend.reservation, st.route
        try:
            if reservation is not None:
                if priced.status in ("free", "saved"):
                    self.budgets.release(reservation)
                else:
                    self.budgets.settle(reservation, priced.cost)
            now = time.time()
            row = policy.ledger_row(now, st.id, route.name, st.tries.upstream, priced, path)
            if row is not None:
                self.ledger.append(row, st.id)
            for scope, budget in policy.budgets_of(route, st.config):
                if self.budgets.crossed_alert(scope, budget):
                    committed = self.budgets.committed(scope, budget)
                    self.bus.publish(BudgetEvent(scope, "alert", usd(committed),
                                                 usd(budget.limit_usd), budget.action))
        except StoreError as e:
            log.warning("could not record spend of %s: %s", route.name, e)


def _facts(flow: http.HTTPFlow, st: FlowState) -> policy.SpendFacts:
    resp = flow.response
    streamed = st.stream.handoff is not None
    return policy.SpendFacts(
        method=flow.request.method, url=st.url, cache=st.cache.status, error=st.error,
        status=resp.status_code if resp is not None else None,
        faulted_without_upstream=bool(st.faults.fired) and not st.tries.upstream,
        streamed=streamed, stream_usage=st.spend.usage, served_body=st.cache.served_body,
        body=None if streamed or st.cache.served_body is not None else _json_body(resp),
        request_model=st.spend.request_model)


def _json_body(resp: http.Response | None):
    if resp is None:
        return None
    try:
        return json.loads(resp.get_content(strict=False) or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
