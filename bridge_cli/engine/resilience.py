"""Per-route resilience state: strategy, breakers and retry budget, kept across reloads.

A reload keeps a route's breakers and learned latencies when the parts of its config they
depend on are unchanged, so editing an unrelated key doesn't close an open breaker.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge_cli.config.model import Breaker, Config, Route, Upstream
from bridge_cli.engine.attempts import BREAKER_OPEN, Outcome
from bridge_cli.engine.balance import Fallback, make_strategy
from bridge_cli.engine.breaker import CircuitBreaker, Transition
from bridge_cli.engine.retry_budget import RetryBudget

DEFAULT_FAILURE_STATUSES = Breaker().failure_statuses


def is_failure(outcome: Outcome, failure_statuses: tuple[int, ...]) -> bool:
    """Does this outcome count against an upstream's breaker?"""
    if outcome.kind == "response":
        return outcome.status in failure_statuses
    return outcome.kind != BREAKER_OPEN


@dataclass
class RouteResilience:
    """What one route remembers between requests."""

    route: Route
    strategy: Fallback
    budget: RetryBudget
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    # --- UpstreamGuard -------------------------------------------------------------
    def allow(self, upstream: Upstream) -> bool:
        b = self.breakers.get(upstream.name)
        return b.allow() if b is not None else True

    def record(self, upstream: Upstream, outcome: Outcome) -> None:
        if outcome.kind == BREAKER_OPEN:
            return
        b = self.breakers.get(upstream.name)
        statuses = b.config.failure_statuses if b is not None else DEFAULT_FAILURE_STATUSES
        failed = is_failure(outcome, statuses)
        # A failure counts as slow as the route's timeout, so a fast-failing upstream
        # never looks like the quickest one to least_latency.
        seconds = max(outcome.duration, self.route.timeout.total) if failed else outcome.duration
        self.strategy.observe(upstream.name, seconds)
        if b is not None:
            b.record(failed, outcome.duration)

    def cancel(self, upstream: Upstream) -> None:
        b = self.breakers.get(upstream.name)
        if b is not None:
            b.release_trial()


class Resilience:
    """All routes' resilience state; `sync(config)` after every (re)load."""

    def __init__(self, *, clock: Callable[[], float], wall: Callable[[], float],
                 rng: random.Random, on_transition: Callable[[Transition], None]) -> None:
        self.clock, self.wall, self.rng = clock, wall, rng
        self.on_transition = on_transition
        self.routes: dict[str, RouteResilience] = {}

    def sync(self, config: Config) -> None:
        """Build state for new or changed routes; keep what still fits; drop the rest."""
        fresh: dict[str, RouteResilience] = {}
        for route in config.routes:
            old = self.routes.get(route.name)
            fresh[route.name] = self._carry(old, route) if old else self._build(route)
        self.routes = fresh

    def _build(self, route: Route) -> RouteResilience:
        retry = route.retry
        budget = RetryBudget(retry.budget if retry else 0.2,
                             retry.budget_floor if retry else 10.0, self.clock)
        rr = RouteResilience(route, make_strategy(route.strategy, self.rng), budget)
        if route.breaker is not None:
            for u in route.upstreams:
                rr.breakers[u.name] = CircuitBreaker(
                    route.name, u.name, route.breaker, clock=self.clock, wall=self.wall,
                    on_transition=self.on_transition)
        return rr

    def _carry(self, old: RouteResilience, route: Route) -> RouteResilience:
        new = self._build(route)
        if route.strategy == old.route.strategy:
            new.strategy = old.strategy
        if route.retry == old.route.retry:
            new.budget = old.budget
        if route.breaker == old.route.breaker:
            for name in new.breakers:
                if name in old.breakers:
                    new.breakers[name] = old.breakers[name]
        return new

    def get(self, route: str) -> RouteResilience | None:
        return self.routes.get(route)
