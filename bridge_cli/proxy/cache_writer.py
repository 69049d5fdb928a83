"""Cache and recording writes, behind the request and off the event loop.

One writer thread, so writes of the same key land in the order they were made. Until a
write lands, its entry answers from memory (`EntryStore.unwritten`), so a hit right after
a miss is a hit. A busy store is retried on the writer thread, where waiting costs no
request anything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

from bridge_cli.engine.cache_plan import CACHE, Write
from bridge_cli.errors import StoreError
from bridge_cli.store.responses import EntryStore, ResponseStores

log = logging.getLogger("bridge.cache")
TRIES = 6  # attempts at one write before giving it up (it's a cache: a lost write is a miss)


class CacheWriter:
    """Applies the engine's Writes to the response stores, in order, on one thread."""

    def __init__(self, stores: ResponseStores, cassette: str) -> None:
        self.stores = stores
        self.cassette = cassette
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bridge-cache")

    def store_of(self, write: Write, namespace: str, max_size: int | None) -> EntryStore:
        if write.target == CACHE:
            return self.stores.cache(namespace, max_size or 2**30)
        return self.stores.cassette(self.cassette)

    def submit(self, writes: list[Write], namespace: str, max_size: int | None) -> None:
        """Write behind: visible at once from memory, on disk shortly."""
        if not writes:
            return
        placed = [(self.store_of(w, namespace, max_size), w) for w in writes]
        for store, w in placed:
            store.unwritten[w.key] = w.entry
        # Record earlier hits first, so the eviction this write may cause sees them.
        touches = self.stores.take_touches()
        done = asyncio.get_running_loop().run_in_executor(self._pool, _write_all, placed,
                                                          touches)
        done.add_done_callback(lambda _: _written(placed))

    def close(self) -> None:
        """Wait for pending writes (call off the event loop)."""
        self._pool.shutdown(True)


def _written(placed: list[tuple[EntryStore, Write]]) -> None:
    """On the loop: what reached the disk no longer needs its in-memory copy (unless a
    newer answer for the same key is waiting to be written)."""
    for store, w in placed:
        if store.unwritten.get(w.key) is w.entry:
            del store.unwritten[w.key]


def _write_all(placed: list[tuple[EntryStore, Write]],
               touches: list[tuple[EntryStore, list[str]]] = ()) -> None:
    for store, keys in touches:
        store.flush_touches(keys)
    for store, w in placed:
        for attempt in range(TRIES):
            try:
                store.put(w.key, w.entry, w.ttl)
                break
            except StoreError as e:
                if attempt == TRIES - 1:
                    log.warning("could not keep a response (%s): %s", w.key[:12], e)
                else:
                    time.sleep(0.05 * (attempt + 1))
