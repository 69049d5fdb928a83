"""Breaker state across restarts: an open breaker is saved with the wall time it opened.

    breaker:<route>:<upstream>   {"format": 1, "route": ..., "upstream": ..., "state": "open",
                                  "opened_at": <epoch seconds>}

Written on transitions only: opening saves the record, any other state removes it (a
restarted bridge starts those closed). Records from before the format was added hold only
"state" and "opened_at"; route and upstream then come from the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge_cli.common.store import Store, make_key, split_key

log = logging.getLogger("bridge.store")

BREAKER_FORMAT = 1  # of a record; bump on an incompatible change
_PREFIX = make_key("breaker") + ":"


@dataclass(frozen=True)
class SavedBreaker:
    """An open breaker found in the store."""

    route: str
    upstream: str
    opened_at: float  # epoch seconds


class BreakerStates:
    """Save and load breaker state over any Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def key(route: str, upstream: str) -> str:
        """The store key of one (route, upstream) breaker."""
        return make_key("breaker", route, upstream)

    def save_open(self, route: str, upstream: str, opened_at: float) -> None:
        """Remember that the breaker opened at opened_at (epoch seconds); StoreError if busy."""
        self.store.set(self.key(route, upstream), {
            "format": BREAKER_FORMAT, "route": route, "upstream": upstream,
            "state": "open", "opened_at": opened_at})

    def save_closed(self, route: str, upstream: str) -> None:
        """Forget the breaker's saved state (closed or half-open); StoreError if busy."""
        self.store.delete(self.key(route, upstream))

    def load(self) -> list[SavedBreaker]:
        """Every saved open breaker; StoreError when the store cannot be scanned."""
        out = []
        for key in self.store.scan(_PREFIX):
            saved = _parse(key, self.store.get(key))
            if saved is not None:
                out.append(saved)
        return out


def _parse(key: str, value: object) -> SavedBreaker | None:
    if not isinstance(value, dict) or value.get("state") != "open":
        return None
    fmt, opened = value.get("format", 0), value.get("opened_at")
    if not isinstance(fmt, int) or fmt > BREAKER_FORMAT:
        log.warning("breaker state %s is of format %r, newer than this bridge reads; ignored",
                    key, fmt)
        return None
    parts = split_key(key)
    route, upstream = value.get("route"), value.get("upstream")
    if fmt == 0 and len(parts) == 3:
        route, upstream = parts[1], parts[2]
    if not (isinstance(route, str) and isinstance(upstream, str)
            and isinstance(opened, int | float) and not isinstance(opened, bool)):
        return None
    return SavedBreaker(route, upstream, float(opened))
