"""Identical requests in flight share one upstream call: the first leads, the rest wait.

A follower waits at most `wait` seconds for the leader's result; a leader that ends
without an answer to share releases its followers with None, and they go on their own.
"""

from __future__ import annotations

import asyncio
from typing import Any


class InFlight:
    """Calls in flight by key; results are whatever the leader finishes with."""

    def __init__(self, wait: float = 600.0) -> None:
        self.wait = wait  # seconds a follower waits for the leader at most
        self._calls: dict[str, asyncio.Future] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._calls

    def lead(self, key: str) -> asyncio.Future:
        """Become the leader for `key`; finish() the returned token when done."""
        token = asyncio.get_running_loop().create_future()
        self._calls[key] = token
        return token

    async def follow(self, key: str) -> Any:
        """The leader's result for `key` (None when it has none or takes too long)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._calls[key]), self.wait)
        except (TimeoutError, KeyError):
            return None

    def finish(self, key: str, token: asyncio.Future, result: Any) -> None:
        """The leader is done: hand `result` to its followers (once)."""
        if self._calls.get(key) is token:
            del self._calls[key]
        if not token.done():
            token.set_result(result)
