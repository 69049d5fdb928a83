"""Circuit breakers, one per (route, upstream): Resilience4j's count-based semantics.

closed     every call is allowed; the last `window` outcomes are kept; once at least
           `min_calls` are recorded and the failure rate (or the slow-call rate) reaches
           its threshold, the breaker opens.
open       calls fail fast without contacting the upstream, for `open_for` seconds.
half_open  `half_open_calls` trial calls are let through; when all of them succeed the
           breaker closes (with an empty window); any failed trial opens it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge_cli.config.model import Breaker as BreakerConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Transition:
    """A change of state, for the `breaker` event and the store."""

    route: str
    upstream: str
    old: str
    new: str
    reason: str
    opened_at_wall: float | None  # epoch seconds the breaker opened (None unless open)


class CircuitBreaker:
    """One breaker. `clock` gives monotonic seconds, `wall` epoch seconds."""

    def __init__(
        self,
        route: str,
        upstream: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        on_transition: Callable[[Transition], None] = lambda t: None,
    ) -> None:
        self.route, self.upstream, self.config = route, upstream, config
        self.clock, self.wall = clock, wall
        self.on_transition = on_transition
        self.state = CLOSED
        self._calls: deque[tuple[bool, bool]] = deque(maxlen=config.window)  # (failed, slow)
        self._opened_at = 0.0  # monotonic
        self._opened_at_wall: float | None = None
        self._trials_started = 0
        self._trials_ok = 0
        self.opens = 0  # how many times it opened since start

    # --- admission -----------------------------------------------------------------
    def allow(self) -> bool:
        """May a call go to the upstream now? In half-open, takes one trial permit."""
        if self.state == OPEN:
            if self.clock() - self._opened_at < self.config.open_for:
                return False
            self._move(HALF_OPEN, f"open for {self.config.open_for:g}s")
        if self.state == HALF_OPEN:
            if self._trials_started >= self.config.half_open_calls:
                return False
            self._trials_started += 1
        return True

    def record(self, failed: bool, duration: float) -> None:
        """The outcome of a call that `allow()` let through (duration in seconds)."""
        slow = self.config.slow_call is not None and duration >= self.config.slow_call.duration
        if self.state == HALF_OPEN:
            if failed:
                self._open("trial call failed in half-open")
                return
            self._trials_ok += 1
            if self._trials_ok >= self.config.half_open_calls:
                self._calls.clear()
                self._move(CLOSED, f"{self._trials_ok} trial call(s) succeeded")
            return
        if self.state == OPEN:
            return  # a call admitted before the breaker opened: its result is stale
        self._calls.append((failed, slow))
        n = len(self._calls)
        if n < self.config.min_calls:
            return
        failures = sum(1 for f, _ in self._calls if f)
        if failures / n >= self.config.failure_rate:
            self._open(f"failure rate {failures}/{n} reached {self.config.failure_rate:.0%}")
            return
        sc = self.config.slow_call
        if sc is not None:
            slow_n = sum(1 for _, s in self._calls if s)
            if slow_n / n >= sc.rate:
                self._open(f"slow-call rate {slow_n}/{n} reached {sc.rate:.0%}")

    def release_trial(self) -> None:
        """Give back a half-open permit for a call that was not made after all."""
        if self.state == HALF_OPEN and self._trials_started > 0:
            self._trials_started -= 1

    # --- state ---------------------------------------------------------------------
    def _open(self, reason: str) -> None:
        self._opened_at = self.clock()
        self._opened_at_wall = self.wall()
        self.opens += 1
        self._move(OPEN, reason)

    def _move(self, new: str, reason: str) -> None:
        old, self.state = self.state, new
        self._trials_started = self._trials_ok = 0
        if new != OPEN:
            self._opened_at_wall = None
        self.on_transition(Transition(self.route, self.upstream, old, new, reason,
                                      self._opened_at_wall))

    def restore(self, opened_at_wall: float) -> None:
        """Resume an open state saved by an earlier run (no transition is emitted)."""
        elapsed = max(0.0, self.wall() - opened_at_wall)
        self.state = OPEN
        self._opened_at = self.clock() - elapsed
        self._opened_at_wall = opened_at_wall

    def snapshot(self) -> dict:
        """State and counts for `bridge status` and the control API."""
        n = len(self._calls)
        failures = sum(1 for f, _ in self._calls if f)
        remaining = None
        if self.state == OPEN:
            remaining = max(0.0, self.config.open_for - (self.clock() - self._opened_at))
        return {
            "state": self.state,
            "calls": n,
            "failures": failures,
            "failure_rate": round(failures / n, 4) if n else 0.0,
            "opens": self.opens,
            "open_remaining_s": round(remaining, 3) if remaining is not None else None,
        }
