"""Time for bridge's policies: breaker windows, fault durations, budget periods, cache TTLs,
backoff. A running bridge takes one Clock from outside, so a test can move time instead of
sleeping through it. (What bridge measures, such as latency and overhead, stays real time.)
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """The real clock: monotonic seconds for windows, epoch seconds for what is stored."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock(Clock):
    """A clock that moves only when told (`advance`), or when bridge sleeps on it: a sleep
    moves it at once, so backoff and fault delays cost a test no real time."""

    def __init__(self, start_wall: float | None = None, start_monotonic: float = 1000.0) -> None:
        self._wall = time.time() if start_wall is None else start_wall
        self._mono = start_monotonic

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        self._mono += seconds
        self._wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
