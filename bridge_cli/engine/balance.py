"""Balancing strategies: the order in which a request tries a route's upstreams.

Each strategy is a small object with `order(upstreams) -> list` (the first is tried
first, the rest are the fallbacks in order) and, where it learns, `observe(name,
seconds)`. Open breakers are skipped by the attempt loop, so every strategy gets that
for free. Adding a strategy is one class plus one line in STRATEGIES.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from bridge_cli.config.model import Upstream


class Fallback:
    """Always in config order: the first upstream is the primary."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def order(self, upstreams: Sequence[Upstream]) -> list[Upstream]:
        return list(upstreams)

    def observe(self, name: str, seconds: float) -> None:
        pass


class Weighted(Fallback):
    """A weighted random order (weights default to 1): the first pick follows the
    weights exactly; the fallbacks follow them among the rest."""

    def order(self, upstreams: Sequence[Upstream]) -> list[Upstream]:
        # Efraimidis–Spirakis: key = u ** (1 / w), sort descending; weight 0 goes last.
        def key(u: Upstream) -> float:
            if u.weight <= 0:
                return -1.0
            return self.rng.random() ** (1.0 / u.weight)

        return sorted(upstreams, key=key, reverse=True)


class RoundRobin(Fallback):
    """Each request starts one upstream further along; the rest follow in rotation."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._next = 0

    def order(self, upstreams: Sequence[Upstream]) -> list[Upstream]:
        n = len(upstreams)
        start = self._next % n
        self._next = (self._next + 1) % n
        return [upstreams[(start + i) % n] for i in range(n)]


class LeastLatency(Fallback):
    """Lowest EWMA latency first; an unmeasured upstream is tried early, and now and then
    (`explore` of requests) another upstream goes first so a recovered one is noticed."""

    alpha = 0.3  # weight of the newest sample in the EWMA
    explore = 0.05

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.ewma: dict[str, float] = {}

    def observe(self, name: str, seconds: float) -> None:
        old = self.ewma.get(name)
        self.ewma[name] = seconds if old is None else self.alpha * seconds + (1 - self.alpha) * old

    def order(self, upstreams: Sequence[Upstream]) -> list[Upstream]:
        ranked = sorted(upstreams, key=lambda u: self.ewma.get(u.name, -math.inf))
        if len(ranked) > 1 and self.rng.random() < self.explore:
            probe = self.rng.randrange(1, len(ranked))
            ranked.insert(0, ranked.pop(probe))
        return ranked


STRATEGIES: dict[str, type[Fallback]] = {
    "fallback": Fallback,
    "weighted": Weighted,
    "round_robin": RoundRobin,
    "least_latency": LeastLatency,
}


def make_strategy(name: str, rng: random.Random) -> Fallback:
    """The strategy called `name` (config `strategy:`)."""
    return STRATEGIES[name](rng)
