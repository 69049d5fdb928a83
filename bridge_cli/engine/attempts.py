"""The attempt loop: which upstream gets the next try, when to wait, when to give up.

One rule for every strategy (DESIGN.md, "Retries and fallback"): each upstream in the
strategy's order gets up to `retry.attempts` tries with backoff between them; when they
are used up, or a second try there cannot help, the request moves to the next upstream.
The loop never touches a socket: `send` (supplied by proxy/) makes one try and reports an
`Outcome`; sleeping, the clock and randomness are injected so tests run on a fake clock.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge_cli.config.model import DEFAULT_RETRY_ON, IDEMPOTENT_METHODS, Retry, Route, Upstream
from bridge_cli.engine.backoff import backoff_delay
from bridge_cli.engine.events import TryRecord
from bridge_cli.engine.llm.errors import CONTENT_FILTER, CONTEXT_LENGTH, OVERLOADED

# Failure kinds a try can end with, besides a response.
CONNECT, RESET, TIMEOUT, BREAKER_OPEN = "connect", "reset", "timeout", "breaker_open"
# A silent upstream (timeout.first_token / timeout.idle): asking it again only doubles the
# wait, so these move straight to the next upstream, whatever `retry.on` lists.
FIRST_TOKEN, IDLE = "first_token", "idle"
STALLED = (FIRST_TOKEN, IDLE)


@dataclass
class Outcome:
    """What one try produced: a response (status set) or a failure kind."""

    kind: str  # "response" | connect | reset | timeout | breaker_open
    status: int | None = None
    retry_after: float | None = None  # seconds, parsed from the response
    duration: float = 0.0  # seconds
    handle: Any = None  # the sender's response object, opaque here
    release: Callable[[], None] | None = None  # frees `handle` when the loop moves on
    never_left: bool = False  # the request provably never reached the upstream
    fault: str | None = None  # the injected fault that produced this outcome
    shaping: Any = None  # response-side faults to apply if this answer reaches the client
    detail: str = ""
    meaning: str | None = None  # an LLM error read by meaning (engine/llm/errors.py)

    @property
    def label(self) -> str:
        """The word `retry.on` uses for this outcome: a status code or a failure kind."""
        return str(self.status) if self.kind == "response" else self.kind

    def discard(self) -> None:
        if self.release is not None:
            self.release()
            self.release = None


class UpstreamGuard(Protocol):
    """Per-upstream admission (circuit breakers); the loop asks before every try."""

    def allow(self, upstream: Upstream) -> bool: ...

    def record(self, upstream: Upstream, outcome: Outcome) -> None: ...

    def cancel(self, upstream: Upstream) -> None:
        """An allowed call was not made after all (gives a half-open permit back)."""


class RetryBudget(Protocol):
    """Bounds retries of a route; the loop asks before every try after the first."""

    def allow_retry(self) -> bool: ...


Sender = Callable[[Upstream, int], Awaitable[Outcome]]


@dataclass
class AttemptResult:
    """The outcome the client gets and every try that led to it."""

    final: Outcome
    upstream: Upstream | None
    tries: list[TryRecord] = field(default_factory=list)
    all_unavailable: bool = False  # every upstream's breaker was open
    budget_exhausted: bool = False
    client_gone: bool = False


class AttemptLoop:
    """Runs the tries of one request over `order`, the strategy's upstream order."""

    def __init__(
        self,
        route: Route,
        *,
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
        guard: UpstreamGuard | None = None,
        budget: RetryBudget | None = None,
        client_gone: Callable[[], bool] = lambda: False,
    ) -> None:
        self.route = route
        self.retry = route.retry or Retry()
        self.sleep = sleep
        self.rng = rng
        self.guard = guard
        self.budget = budget
        self.client_gone = client_gone

    def _retryable(self, method: str, outcome: Outcome) -> bool:
        """May this outcome move to another try (same or next upstream)?"""
        on = self.retry.on if self.route.retry else DEFAULT_RETRY_ON
        if outcome.kind == BREAKER_OPEN:
            return True
        if outcome.meaning == CONTENT_FILTER:
            return CONTENT_FILTER in on  # never by default: the same prompt meets the same filter
        if outcome.meaning in (CONTEXT_LENGTH, OVERLOADED) and self.route.llm:
            return True  # a larger model, or a less busy one, may answer (never_left below)
        if outcome.label not in on and outcome.kind not in STALLED:
            return False
        # `retry.methods` adds to the idempotent methods, which are always safe to resend.
        if method in IDEMPOTENT_METHODS or method in self.retry.methods:
            return True
        # A non-idempotent request moves on only when it provably never left (an LLM
        # route's error answer or silent stream: the call produced nothing to bill).
        return outcome.never_left or (self.route.llm is not None
                                      and (outcome.kind in STALLED or outcome.meaning is not None))

    def _same_upstream_can_help(self, outcome: Outcome, others_left: bool) -> bool:
        if outcome.kind == BREAKER_OPEN or outcome.kind in STALLED:
            return False
        if outcome.meaning in (CONTEXT_LENGTH, CONTENT_FILTER):
            return False  # the same model gives the same answer
        if outcome.meaning == OVERLOADED and others_left:
            return False  # fail over now rather than wait on a busy provider
        if outcome.kind == CONNECT and outcome.never_left and others_left:
            return False  # refused: another upstream is a better bet than waiting
        return True

    async def run(self, method: str, order: Sequence[Upstream], send: Sender) -> AttemptResult:
        """Try upstreams in `order` until one answers acceptably or nothing is left."""
        method = method.upper()
        tries: list[TryRecord] = []
        last: Outcome | None = None
        last_up: Upstream | None = None
        any_attempted = False
        too_long: Upstream | None = None  # the upstream whose model found the prompt too long
        for index, upstream in enumerate(order):
            others_left = index < len(order) - 1
            if too_long is not None and not _larger(upstream, too_long):
                continue  # a model no larger than the one that refused the prompt
            attempts = 1 if too_long is not None else self.retry.attempts
            for attempt in range(attempts):
                if self.client_gone():
                    return AttemptResult(last or Outcome(RESET, detail="client gone"),
                                         last_up, tries, client_gone=True)
                if self.guard is not None and not self.guard.allow(upstream):
                    tries.append(TryRecord(upstream.name, BREAKER_OPEN))
                    break  # fail fast: no contact, straight to the next upstream
                if any_attempted and self.budget is not None and not self.budget.allow_retry():
                    if self.guard is not None:
                        self.guard.cancel(upstream)
                    return AttemptResult(last, last_up, tries, budget_exhausted=True)
                if last is not None:
                    last.discard()
                outcome = await send(upstream, attempt)
                any_attempted = True
                last, last_up = outcome, upstream
                retryable = self._retryable(method, outcome)
                tries.append(_record(upstream, outcome, retryable))
                if self.guard is not None:
                    self.guard.record(upstream, outcome)
                if not retryable:
                    return AttemptResult(outcome, upstream, tries)
                if outcome.meaning == CONTEXT_LENGTH and too_long is None:
                    too_long = upstream
                if attempt + 1 >= attempts or not self._same_upstream_can_help(outcome,
                                                                                others_left):
                    break
                wait = self._wait_before_retry(outcome, attempt)
                if wait is None:
                    break  # Retry-After beyond backoff.max: the next upstream, at once
                if wait > 0:
                    await self.sleep(wait)
        if last is None:
            return AttemptResult(Outcome(BREAKER_OPEN), None, tries, all_unavailable=True)
        return AttemptResult(last, last_up, tries)

    def _wait_before_retry(self, outcome: Outcome, attempt: int) -> float | None:
        """Seconds to wait before the next try on the same upstream; None: move on now."""
        b = self.retry.backoff
        if outcome.retry_after is not None and self.retry.respect_retry_after:
            return outcome.retry_after if outcome.retry_after <= b.max else None
        return backoff_delay(attempt, b.initial, b.max, b.jitter, self.rng)


def _record(upstream: Upstream, outcome: Outcome, retryable: bool) -> TryRecord:
    label = "ok" if outcome.kind == "response" and not retryable else outcome.label
    return TryRecord(upstream.name, label, outcome.status, round(outcome.duration * 1000, 3),
                     outcome.fault)


def _larger(candidate: Upstream, refused: Upstream) -> bool:
    """May `candidate` take a prompt `refused`'s model found too long? A larger context
    window may; where either window is unknown, one try finds out."""
    if candidate.context_window is None or refused.context_window is None:
        return True
    return candidate.context_window > refused.context_window
