"""The retry budget of a route (Linkerd's: ratio, floor, window).

Retries over the last `window` seconds may not exceed `ratio` of the route's requests in
that window plus `floor` retries per second, so a dead upstream can't multiply the load
while a single request on a quiet route still gets its configured tries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

WINDOW = 10.0  # seconds


class RetryBudget:
    """Counts requests and retries of one route; `clock` gives monotonic seconds."""

    def __init__(self, ratio: float, floor_per_s: float, clock: Callable[[], float],
                 window: float = WINDOW) -> None:
        self.ratio = ratio
        self.floor = floor_per_s * window
        self.window = window
        self.clock = clock
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.refused = 0

    def _prune(self, now: float) -> None:
        edge = now - self.window
        for q in (self._requests, self._retries):
            while q and q[0] < edge:
                q.popleft()

    def record_request(self) -> None:
        """A new request arrived on the route."""
        now = self.clock()
        self._prune(now)
        self._requests.append(now)

    def allow_retry(self) -> bool:
        """May one more try happen now? Counts it when it may."""
        now = self.clock()
        self._prune(now)
        if len(self._retries) + 1 > self.ratio * len(self._requests) + self.floor:
            self.refused += 1
            return False
        self._retries.append(now)
        return True

    def snapshot(self) -> dict:
        now = self.clock()
        self._prune(now)
        return {"requests_10s": len(self._requests), "retries_10s": len(self._retries),
                "refused": self.refused}
