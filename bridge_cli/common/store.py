"""The Store protocol: all engine/ and proxy/ know about persistent state.

Keys are namespaced strings, parts joined by ":", namespace first, most general part to
most specific, so that `scan(prefix)` finds a family of keys:

    budget:committed:<scope>:<bucket>   micro-dollars spent or reserved (engine/budget.py)
    budget:spent:<scope>:<bucket>       micro-dollars settled
    budget:alerted:<scope>:<bucket>     how often the alert threshold was crossed
    ledger:<day>:<ts>-<request id>      one priced call (store/ledger.py)
    owner:<owner>                       a running bridge, expiring unless refreshed
    holds:<owner>                       what its requests in flight hold, per budget key
                                        (proxy/holds.py)
    breaker:<route>:<upstream>          an open breaker, written on transitions only
                                        (store/breakers.py)
    entry:<sha256>, idx:<sha256>        a cached response and its summary, in a cache
                                        namespace's or a cassette's own store
                                        (store/responses.py)
    drift:baseline:<route>:<endpoint>   what an endpoint's bodies look like, learned
                                        (store/drift.py)
    drift:finding:<route>:<digest>      one distinct change in an endpoint's bodies, with
                                        how often it was seen (store/drift.py)

Record formats: every dict record carries `"format": N` (its codec's version, bumped on an
incompatible change) so that a newer bridge can still read an older store; counters
(`budget:*`) stay bare integers, which have nothing to version. A period or bucket is
written so that keys sort by time (`2026-11-25`, `2026-11`, `2026-W48`). A part that may
itself contain ":" (a scope, an upstream URL, a model name) goes through `make_key`. Values
are JSON-compatible (dict, list, str, int, float, bool, None) or bytes; money is always an
integer number of micro-dollars, never a float.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable


def make_key(*parts: str) -> str:
    """Join key parts with ":", escaping "%" and ":" inside a part so prefixes stay exact."""
    return ":".join(p.replace("%", "%25").replace(":", "%3A") for p in parts)


def split_key(key: str) -> list[str]:
    """The parts `make_key` joined: `split_key(make_key(*parts)) == list(parts)`."""
    return [p.replace("%3A", ":").replace("%25", "%") for p in key.split(":")]


@runtime_checkable
class Store(Protocol):
    """Namespaced key/value state. Reads of records are misses when the store is busy or
    broken; writes, and reads of money (`get_int`), raise StoreError instead."""

    def get(self, key: str) -> Any | None:
        """Return the value stored at key, or None when missing, expired, busy or unreadable."""
        ...

    def peek(self, key: str) -> Any | None:
        """Like get, but the read does not count as a use for eviction (no write on reads)."""
        ...

    def get_int(self, key: str) -> int:
        """The integer at key, 0 when missing; StoreError when busy, unreadable or not an int."""
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

    def check(self) -> bool:
        """Whether the store was deleted or replaced under this process; if so it is opened
        anew (True), and the caller says so loudly: what was in it is gone."""
        ...

    def impatient(self) -> Store:
        """The same state through a handle whose operations fail at once (StoreError) when
        the store is busy instead of waiting: for the event loop, with a patient fallback."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """A context in which every write is one transaction (StoreError when busy)."""
        ...

    def touch(self, keys: list[str]) -> None:
        """Record keys as used now, for least-recently-used eviction (one batch, off the loop)."""
        ...

    def close(self) -> None:
        """Release files and connections; the store must not be used afterwards."""
        ...
