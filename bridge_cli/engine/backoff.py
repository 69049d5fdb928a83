"""Backoff between tries: exponential from `initial` to `max`, with a jitter strategy.

The AWS "full jitter" scheme by default: sleep = uniform(0, min(max, initial * 2**n)).
Adding a jitter is one function plus one line in JITTERS.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def _full(ceiling: float, rng: random.Random) -> float:
    return rng.uniform(0.0, ceiling)


def _equal(ceiling: float, rng: random.Random) -> float:
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


def _none(ceiling: float, rng: random.Random) -> float:
    return ceiling


JITTERS: dict[str, Callable[[float, random.Random], float]] = {
    "full": _full,
    "equal": _equal,
    "none": _none,
}


def backoff_delay(
    attempt: int, initial: float, maximum: float, jitter: str, rng: random.Random
) -> float:
    """Seconds to wait after try number `attempt` (0 for the first) failed."""
    ceiling = min(maximum, initial * (2**attempt))
    return JITTERS[jitter](ceiling, rng)
