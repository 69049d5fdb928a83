"""Cache and recording writes, behind the request and off the event loop.

One writer thread, so writes of the same key land in the order they were made; what has
queued up while it wrote goes to disk in one transaction per store, so a busy bridge pays
one commit for many responses. Until a write lands, its entry answers from memory
(`EntryStore.unwritten`), so a hit right after a miss is a hit. A busy store is retried on
the writer thread, where waiting costs no request anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from bridge_cli.engine.cache_plan import CACHE, Write
from bridge_cli.errors import StoreError
from bridge_cli.store.responses import EntryStore, ResponseStores

log = logging.getLogger("bridge.cache")
TRIES = 6  # attempts at one batch before giving it up (it's a cache: a lost write is a miss)
MAX_BATCH = 256  # writes in one transaction
INTERVAL = 0.02  # seconds between looks at the queue: a wake-up per write would make the
# writer and the event loop trade the GIL on every request

Placed = list[tuple[EntryStore, Write]]


class CacheWriter:
    """Applies the engine's Writes to the response stores, in order, on one thread."""

    def __init__(self, stores: ResponseStores, cassette: str) -> None:
        self.stores = stores
        self.cassette = cassette
        self._queue: deque[tuple[asyncio.AbstractEventLoop, Placed, list]] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="bridge-cache", daemon=True)
        self._thread.start()

    def store_of(self, write: Write, namespace: str, max_size: int | None) -> EntryStore:
        if write.target == CACHE:
            return self.stores.cache(namespace, max_size or 2**30)
        return self.stores.cassette(self.cassette)

    def submit(self, writes: list[Write], namespace: str, max_size: int | None) -> None:
        """Write behind: visible at once from memory, on disk shortly (call on the loop)."""
        if not writes:
            return
        placed = [(self.store_of(w, namespace, max_size), w) for w in writes]
        for store, w in placed:
            store.unwritten[w.key] = w.entry
        # Reads are taken here, on the loop that records them, and written first, so the
        # eviction these writes may cause sees them.
        touches = self.stores.take_touches()
        self._queue.append((asyncio.get_running_loop(), placed, touches))

    def close(self, grace: float = 10.0) -> None:
        """Land what is queued, waiting at most `grace` seconds (call off the event loop)."""
        self._closing = True
        self._wake.set()
        self._thread.join(grace)

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # this thread's database connections (each thread has its own)
            self.stores.close_connections()

    def _loop(self) -> None:
        while True:
            self._wake.wait(INTERVAL)
            self._wake.clear()
            while self._queue:
                jobs = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
                placed = [p for _, job, _ in jobs for p in job]
                for _, _, touches in jobs:
                    for store, keys in touches:
                        store.flush_touches(keys)
                write_all(placed)
                loop = jobs[-1][0]
                try:
                    loop.call_soon_threadsafe(_written, placed)
                except RuntimeError:  # the loop has closed: nobody reads `unwritten` now
                    pass
            if self._closing:
                return


def _written(placed: Placed) -> None:
    """On the loop: what reached the disk no longer needs its in-memory copy (unless a
    newer answer for the same key is waiting to be written)."""
    for store, w in placed:
        if store.unwritten.get(w.key) is w.entry:
            del store.unwritten[w.key]


def write_all(placed: Placed) -> None:
    """Write every (store, write), one transaction per store, retrying a busy store."""
    by_store: dict[int, tuple[EntryStore, list[Write]]] = {}
    for store, w in placed:
        by_store.setdefault(id(store), (store, []))[1].append(w)
    for store, writes in by_store.values():
        for attempt in range(TRIES):
            try:
                store.put_many([(w.key, w.entry, w.ttl) for w in writes])
                break
            except StoreError as e:
                if attempt == TRIES - 1:
                    log.warning("could not keep %d response(s) in %s: %s", len(writes),
                                store.directory.name, e)
                else:
                    time.sleep(0.05 * (attempt + 1))
