"""The Store protocol: the only thing engine/ and proxy/ know about persistent state.

Keys are namespaced strings, parts joined by ":", namespace first, most general part to
most specific, so that `scan(prefix)` finds a family of keys:

    spend:route:<route>:<period>        micro-dollars settled for a route in a period
    reserved:route:<route>:<period>     micro-dollars reserved by calls still in flight
    spend:global:<period>               the same for the top-level `budget:`
    breaker:<route>:<upstream>          breaker state, written on transitions only
    cache:<namespace>:<sha256>          a cached response (and its key's parts)
    schema:<route>:<sha256>             a learned response schema
    cassette:<name>:<sha256>            a recorded response for offline replay

A period is written so that keys sort by time (`2026-11-25`, `2026-11`, `2026-W48`). A
part that may itself contain ":" (an upstream URL, a model name) goes through `make_key`,
or is hashed. Values are JSON-compatible (dict, list, str, int, float, bool, None) or
bytes; money is always an integer number of micro-dollars, never a float.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable


def make_key(*parts: str) -> str:
    """Join key parts with ":", escaping "%" and ":" inside a part so prefixes stay exact."""
    return ":".join(p.replace("%", "%25").replace(":", "%3A") for p in parts)


@runtime_checkable
class Store(Protocol):
    """Namespaced key/value state; a busy or broken store reads as a miss."""

    def get(self, key: str) -> Any | None:
        """Return the value stored at key, or None when missing, expired, busy or unreadable."""
        ...

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store a JSON-compatible value or bytes at key; ttl: seconds, None for no expiry."""
        ...

    def incr(self, key: str, delta: int = 1) -> int:
        """Atomically add delta to the integer at key (missing counts as 0); return the result."""
        ...

    def delete(self, key: str) -> bool:
        """Remove key; return whether it existed."""
        ...

    def scan(self, prefix: str) -> Iterator[str]:
        """Yield the live keys that start with prefix, in key order."""
        ...

    def reserve(self, key: str, amount: int, limit: int) -> bool:
        """Atomically add amount to the integer at key only if the result stays <= limit."""
        ...

    def release(self, key: str, amount: int) -> int:
        """Atomically subtract amount from the integer at key, never below 0; return it."""
        ...

    def close(self) -> None:
        """Release files and connections; the store must not be used afterwards."""
        ...
