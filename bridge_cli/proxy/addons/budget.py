"""Step 3 of a request: the guard. Reserve the request's worst case against its budgets
before it leaves, or refuse it (engine/budget.py decides; SpendAddon settles it later).
A budget first counts what the ledger recorded in its period before it held anything
(Budgets.seed), once per period and process. Rate limits will join here."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from bridge_cli.engine import spend as policy
from bridge_cli.engine.budget import Budgets, Refusal, Worst, window_of
from bridge_cli.engine.events import BudgetEvent, EventBus
from bridge_cli.engine.money import usd
from bridge_cli.engine.pricing import estimate, route_worst_case
from bridge_cli.engine.replies import error_reply
from bridge_cli.errors import StoreError
from bridge_cli.proxy.flowstate import FlowState, routed
from bridge_cli.proxy.respond import apply_reply
from bridge_cli.proxy.settler import Settler
from bridge_cli.store.ledger import Ledger

log = logging.getLogger("bridge.spend")


class BudgetAddon:
    """Budget reservations by each request's worst case; a refusal is bridge's 402."""

    def __init__(self, bus: EventBus, settler: Settler) -> None:
        self.bus = bus
        self.settler = settler  # reservations are made on its writer thread
        # (scope, bucket) -> the count of what the ledger recorded before the budget held
        # anything there; every request of the bucket waits for it before it reserves
        self._seeds: dict[tuple[str, str], asyncio.Future] = {}

    async def request(self, flow: http.HTTPFlow) -> None:
        if (got := routed(flow)) is None:
            return
        st, route = got
        budgets = policy.budgets_of(route, st.config)
        if route.spend is not None and budgets:  # without spend there is no price to hold
            await self._reserve(flow, st, budgets)

    async def _reserve(self, flow: http.HTTPFlow, st: FlowState, budgets) -> None:
        body = flow.request.raw_content or b""
        try:
            worst = estimate(st.route.spend, flow.request.method, body, st.config.pricing)
        except Exception:  # a bug must not let the request past its budget: hold the most
            log.exception("could not estimate request %s; reserving the route's worst case",
                          st.id)
            try:
                worst = Worst(route_worst_case(st.route.spend, flow.request.method, len(body)),
                              st.route.spend.default_max_tokens, None, True)
            except Exception as e:
                apply_reply(flow, error_reply(
                    "bridge_internal", f"bridge could not price this request against its "
                    f"budget ({type(e).__name__}: {e}); it was not sent"))
                return
        amount = worst.amount
        try:
            await self._seeded(budgets)
            future = self.settler.reserve(budgets, amount)
            # Mostly answered at once; else the writer thread answers when the store lets it.
            reservation, refusal = (future.result() if future.done()
                                    else await asyncio.wrap_future(future))
        except StoreError as e:
            # A busy or broken store must not let a budget be passed silently: refuse.
            apply_reply(flow, error_reply("budget_exceeded",
                                          f"bridge could not check the budget ({e}); try again"))
            return
        except Exception as e:  # a bug must not let a request past its budget either
            apply_reply(flow, error_reply("bridge_internal",
                                          f"bridge could not reserve against the budget ({e})"))
            return
        if refusal is not None:
            self._announce(refusal, amount)
            if refusal.action == "block":
                apply_reply(flow, error_reply(
                    "budget_exceeded", refusal.message(amount, worst.why()),
                    extra={**refusal.detail(), "reserved_usd": usd(amount)}))
                return
        st.spend.reservation = reservation
        if reservation.held:
            self.settler.opened(st.id, reservation, tuple(budgets), st.route.name,
                                flow.request.path)

    async def _seeded(self, budgets) -> None:
        """Wait until each budget counts what the ledger recorded in its current bucket
        before it held anything (StoreError when the store can't tell: refuse)."""
        wall = self.settler.budgets.wall()
        for scope, budget in budgets:
            # A rolling window is checked once per process: from then on the budget counts
            # every call itself (the ledger marks them), and reading the window's rows at
            # every new minute bucket would cost more than it could find.
            key = (scope, f"rolling {budget.rolling}" if budget.rolling
                   else window_of(budget, wall).bucket)
            seed = self._seeds.get(key)
            if seed is None:
                seed = self._seeds[key] = asyncio.ensure_future(
                    asyncio.to_thread(self._seed, scope, budget))
            try:
                if not seed.done():
                    await asyncio.shield(seed)
                seed.result()
            except Exception:
                if self._seeds.get(key) is seed:
                    del self._seeds[key]  # the next request tries again
                raise

    def _seed(self, scope: str, budget) -> None:
        """On a worker thread: read the ledger, then count what no counter holds yet."""
        budgets: Budgets = self.settler.budgets
        found = budgets.unseeded(scope, budget, Ledger(budgets.store).rows)
        if found:
            with budgets.store.batch():
                added = budgets.seed(scope, found)
            if added:
                log.info("budget %s counts $%s the ledger recorded before it was configured",
                         scope, usd(added))

    def _announce(self, r: Refusal, amount: int) -> None:
        self.bus.publish(BudgetEvent(r.scope, "exceeded", usd(r.committed + amount),
                                     usd(r.limit), r.action))
