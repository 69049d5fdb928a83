"""Steps 3 and 7 of a request: reserve against budgets before it leaves, and price it when
the answer is complete (streamed too). Policy: engine/pricing.py and engine/budget.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from mitmproxy import http

from bridge_cli.config.model import Budget, Route
from bridge_cli.engine.budget import Budgets, Refusal, Reservation
from bridge_cli.engine.events import BudgetEvent
from bridge_cli.engine.money import usd
from bridge_cli.engine.pricing import (
    Priced,
    StreamUsage,
    billable,
    flat_price,
    price_response,
    settled_price,
    worst_case,
)
from bridge_cli.engine.replies import error_reply
from bridge_cli.errors import StoreError
from bridge_cli.proxy.flowmeta import apply_reply, meta, route_of
from bridge_cli.proxy.state import LiveState
from bridge_cli.store.base import Store, make_key

log = logging.getLogger("bridge.spend")
FREE = ("hit", "coalesced", "replay")


def budgets_of(route: Route, config) -> list[tuple[str, Budget]]:
    out = []
    if route.budget is not None:
        out.append((f"route:{route.name}", route.budget))
    if config.budget is not None:
        out.append(("global", config.budget))
    return out


class SpendAddon:
    """Budget reservations, usage pricing, the spend ledger and budget alerts."""

    def __init__(self, state: LiveState, store: Store) -> None:
        self.state = state
        self.store = store
        self.budgets = Budgets(store, time.time)

    # --- before the request leaves -----------------------------------------------------------
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        m = meta(flow)
        route = route_of(flow)
        if route is None or "handoff" in m or (route.spend is None and not budgets_of(route, m["config"])):
            return
        spend = route.spend
        if spend is not None and spend.provider:
            m["request_model"] = _request_model(flow)
            m["stream_usage"] = StreamUsage()  # fed by the forwarder if the answer streams
            if spend.inject_usage and spend.provider == "openai":
                _inject_usage(flow, m)
        budgets = budgets_of(route, m["config"])
        if not budgets or spend is None:
            return
        amount = worst_case(spend, flow.request.method, flow.request.raw_content or b"",
                            m["config"].pricing)
        loop = asyncio.get_running_loop()
        try:
            reservation, refusal = await loop.run_in_executor(
                None, self.budgets.reserve, budgets, amount)
        except StoreError as e:
            # A busy or broken store must not let a budget be passed silently: refuse.
            apply_reply(flow, error_reply("budget_exceeded",
                                          f"bridge could not check the budget ({e}); try again"))
            return
        if refusal is not None:
            self._announce(refusal, amount)
            if refusal.action == "block":
                apply_reply(flow, error_reply("budget_exceeded", refusal.message(amount),
                                              extra=refusal.detail()))
                return
        m["reservation"] = reservation

    def _announce(self, r: Refusal, amount: int) -> None:
        self.state.bus.publish(BudgetEvent(r.scope, "exceeded", usd(r.committed + amount),
                                           usd(r.limit), r.action))

    # --- once the answer is complete ---------------------------------------------------------
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        route = route_of(flow)
        if m is None or route is None or route.spend is None or m.get("spend_done"):
            return
        m["spend_done"] = True
        reservation: Reservation | None = m.get("reservation")
        priced = settled_price(self._price(flow, m, route),
                               reservation.amount if reservation is not None else None)
        m["spend"] = priced
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self._settle, route, m, reservation, priced, flow.request.path)

    def _price(self, flow: http.HTTPFlow, m: dict, route: Route) -> Priced:
        spend = route.spend
        resp = flow.response
        if m.get("cache") in FREE:  # free, and what it would have cost is a saving
            would = self._price_answer(flow, m, route)
            return Priced(0, "saved", would.model, would.usage, reason=str(would.cost))
        if m.get("error") or resp is None or m.get("faults") and not m.get("upstream"):
            return Priced(0, "free", reason=m.get("error") or "no upstream answer")
        if not billable(resp.status_code, spend):
            return Priced(0, "free", reason=f"the upstream answered {resp.status_code}")
        return self._price_answer(flow, m, route)

    def _price_answer(self, flow: http.HTTPFlow, m: dict, route: Route) -> Priced:
        spend = route.spend
        if spend.per_request_usd is not None:
            return flat_price(spend, flow.request.method)
        su: StreamUsage | None = m.get("stream_usage")
        served = m.get("served_body")
        if served is not None:  # a cache hit or replay: price the stored answer
            if served.lstrip()[:1] in (b"{", b"["):
                try:
                    body = json.loads(served)
                except ValueError:
                    body = None
            else:
                su = StreamUsage()
                su.feed(served)
                body = su.response()
        elif m.get("handoff") is not None:
            body = su.response() if su is not None else None
            if body is None:
                return Priced(0, "unpriced", reason="the stream carried no usage (set "
                              "spend.inject_usage, or ask for stream_options.include_usage)")
        else:
            body = _json_body(flow.response)
        return price_response(spend.provider, body, path=m["url"], pricing=m["config"].pricing,
                              request_model=m.get("request_model"))

    def _settle(self, route: Route, m: dict, reservation: Reservation | None, priced: Priced,
                path: str) -> None:
        """Off the event loop: settle the reservation, write the ledger, check alerts."""
        try:
            cost, status = priced.cost, priced.status
            if reservation is not None:
                if status in ("free", "saved"):
                    self.budgets.release(reservation)
                else:
                    self.budgets.settle(reservation, cost)
            now = time.time()
            day = time.strftime("%Y-%m-%d", time.localtime(now))
            saved = int(priced.reason) if status == "saved" and (priced.reason or "").isdigit() else 0
            if status != "free" or saved:
                self.store.set(make_key("ledger", day, f"{now:.6f}-{m['id']}"), {
                    "ts": now, "route": route.name, "upstream": m.get("upstream"),
                    "model": priced.model, "cost_micros": cost if status != "saved" else 0,
                    "saved_micros": saved, "status": status, "reason": priced.reason
                    if status != "saved" else None, "tokens": priced.usage,
                    "snapshot": priced.snapshot, "path": path.split("?")[0]})
            for scope, budget in budgets_of(route, m["config"]):
                if self.budgets.crossed_alert(scope, budget):
                    committed = self.budgets.committed(scope, budget)
                    self.state.bus.publish(BudgetEvent(scope, "alert", usd(committed),
                                                       usd(budget.limit_usd), budget.action))
        except StoreError as e:
            log.warning("could not record spend of %s: %s", route.name, e)


def _json_body(resp: http.Response | None):
    if resp is None:
        return None
    try:
        return json.loads(resp.get_content(strict=False) or b"null")
    except (ValueError, UnicodeDecodeError):
        return None


def _request_model(flow: http.HTTPFlow) -> str | None:
    """The model the request names: its JSON `model`, or Gemini's `/models/NAME:...` path."""
    path = flow.request.path.split("?")[0]
    if "/models/" in path:
        return path.split("/models/", 1)[1].split(":", 1)[0].split("/", 1)[0] or None
    body = flow.request.raw_content or b""
    if body[:1] == b"{":
        try:
            model = json.loads(body).get("model")
            return model if isinstance(model, str) else None
        except (ValueError, AttributeError):
            return None
    return None


def _inject_usage(flow: http.HTTPFlow, m: dict) -> None:
    """Ask an OpenAI stream for its usage; remember to strip it when the client didn't ask."""
    try:
        doc = json.loads(flow.request.raw_content or b"")
    except ValueError:
        return
    if not isinstance(doc, dict) or doc.get("stream") is not True:
        return
    opts = doc.get("stream_options") or {}
    if opts.get("include_usage"):
        return
    doc["stream_options"] = {**opts, "include_usage": True}
    flow.request.raw_content = json.dumps(doc).encode()
    flow.request.headers["content-length"] = str(len(flow.request.raw_content))
    m["strip_usage"] = True
