"""Where cached responses and recordings (cassettes) live: one directory each.

    $BRIDGE_HOME/cache/<namespace>/   a route's cache (namespace: the route's name unless
                                      `cache.namespace` shares one), LRU at `max_size`
    $BRIDGE_HOME/cassettes/<name>/    a recording (`bridge up --record --cassette NAME`)

In each: "entry:<key>" holds the JSON entry (common/entry.py's codec, with its FORMAT) and
"idx:<key>" a small summary (format, parts, route, status, size, stored_at, stream) that
`bridge cache ls` and offline misses read without loading bodies. Only the Store protocol
is used; the opener (diskcache by default) decides where a directory's store lives. Used by
the running proxy and by the CLI directly, so reports on stored data work with no bridge
running.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from bridge_cli.common.entry import FORMAT, Entry, parse_entry
from bridge_cli.common.store import Store
from bridge_cli.errors import StoreError, UsageError
from bridge_cli.store.disk import open_cache_store

log = logging.getLogger("bridge.cache")
# (directory, size_limit bytes) -> the store of one namespace or cassette
Opener = Callable[[Path, int], Store]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def valid_name(name: object) -> bool:
    """Whether `name` may name a cache namespace or a cassette (a directory under the home)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def _check_name(kind: str, name: str) -> str:
    if not valid_name(name):
        raise UsageError(f"{kind} name {name!r}: use letters, digits, '.', '_' or '-' "
                         "(at most 64), e.g. default")
    return name


class EntryStore:
    """One cache namespace or one cassette."""

    def __init__(self, directory: Path, size_limit: int = 2**30,
                 opener: Opener = open_cache_store) -> None:
        self.directory = directory
        self._store: Store | None = None
        self._size_limit = size_limit
        self._opener = opener
        # Entries handed to a writer thread and not on disk yet: read from here meanwhile,
        # so the request right after a miss is already a hit. Touched on the loop thread only.
        self.unwritten: dict[str, Entry] = {}
        # Keys read since the last `flush_touches`: their use is recorded in one batch.
        self.touched: set[str] = set()

    @property
    def store(self) -> Store:
        """The underlying store, opened on first use."""
        if self._store is None:
            self._store = self._opener(self.directory, self._size_limit)
        return self._store

    def get(self, key: str) -> Entry | None:
        """The entry, or None when absent, unreadable or corrupt (logged once, a miss)."""
        if key in self.unwritten:
            return self.unwritten[key]
        try:
            raw = self.store.peek(f"entry:{key}")
        except StoreError as e:
            log.warning("cache %s: %s (served as a miss)", self.directory.name, e)
            return None
        if raw is None:
            return None
        entry = parse_entry(raw)
        if entry is not None:
            self.touched.add(key)
        if entry is None:
            log.warning("cache %s: entry %s is corrupt or of an older format; a miss",
                        self.directory.name, key[:12])
        return entry

    def put(self, key: str, entry: Entry, ttl: float | None) -> None:
        """Store an entry and its summary (raises StoreError; call off the event loop)."""
        self.put_many([(key, entry, ttl)])

    def put_many(self, items: list[tuple[str, Entry, float | None]]) -> None:
        """Store entries and their summaries in one transaction: all or none (raises
        StoreError; call off the event loop)."""
        with self.store.batch():
            for key, entry, ttl in items:
                self._put(key, entry, ttl)

    def _put(self, key: str, entry: Entry, ttl: float | None) -> None:
        self.store.set(f"entry:{key}", entry.to_json(), ttl)
        self.store.set(f"idx:{key}", {"format": FORMAT, "parts": entry.parts,
                                      "route": entry.route,
                                      "status": entry.status, "size": entry.size,
                                      "stored_at": entry.stored_at,
                                      "stream": entry.events is not None,
                                      "about": entry.about}, ttl)

    def summaries(self) -> Iterator[tuple[str, dict]]:
        """(key, summary) of every entry."""
        for k in self.store.scan("idx:"):
            summary = self.store.peek(k)  # listing is not a use: it must not delay eviction
            if isinstance(summary, dict):
                yield k.removeprefix("idx:"), summary

    def take_touches(self) -> list[str]:
        """The store keys of entries read since last time (hand them to flush_touches)."""
        keys, self.touched = self.touched, set()
        return [f"{kind}:{k}" for k in keys for kind in ("entry", "idx")]

    def flush_touches(self, keys: list[str] | None = None) -> None:
        """Record the reads (least-recently-used eviction); call off the event loop."""
        keys = self.take_touches() if keys is None else keys
        try:
            self.store.touch(keys)
        except StoreError as e:
            log.debug("cache %s: could not record %d reads: %s", self.directory.name,
                      len(keys), e)

    def clear(self) -> int:
        """Remove every entry (safe while a bridge has this store open); how many there were."""
        keys = [k.removeprefix("idx:") for k in self.store.scan("idx:")]
        for k in keys:
            self.delete(k)
        self.unwritten.clear()
        return len(keys)

    def delete(self, key: str) -> None:
        """Remove one entry and its summary."""
        self.store.delete(f"entry:{key}")
        self.store.delete(f"idx:{key}")

    def close(self) -> None:
        """Close the underlying store (it reopens on next use)."""
        if self._store is not None:
            self._store.close()
            self._store = None


class ResponseStores:
    """Every cache namespace and cassette under one $BRIDGE_HOME."""

    def __init__(self, home: Path, opener: Opener = open_cache_store) -> None:
        self.home = home
        self._opener = opener
        self._open: dict[tuple[str, str], EntryStore] = {}

    def cache(self, namespace: str, size_limit: int = 2**30) -> EntryStore:
        """A route's cache namespace (size_limit: bytes), opened once."""
        return self._get("cache", _check_name("namespace", namespace), size_limit)

    def cassette(self, name: str) -> EntryStore:
        """A recording, opened once."""
        return self._get("cassettes", _check_name("cassette", name), 2**40)

    def _get(self, kind: str, name: str, size_limit: int) -> EntryStore:
        es = self._open.get((kind, name))
        if es is None:
            es = EntryStore(self.home / kind / name, size_limit, self._opener)
            self._open[(kind, name)] = es
        return es

    def names(self, kind: str) -> list[str]:
        """Existing cache namespaces ("cache") or cassettes ("cassettes")."""
        base = self.home / kind
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def remove(self, kind: str, name: str) -> bool:
        """Delete a whole namespace or cassette; False when there was none."""
        es = self._open.pop((kind, name), None)
        if es is not None:
            es.close()
        path = self.home / kind / name
        if not path.is_dir():
            return False
        shutil.rmtree(path)
        return True

    def take_touches(self) -> list[tuple[EntryStore, list[str]]]:
        """Reads to record, per store: taken on the loop, recorded on a writer thread."""
        return [(es, keys) for es in self._open.values() if (keys := es.take_touches())]

    def close_connections(self) -> None:
        """Close the calling thread's connections to every store opened here (a writer
        thread ending); the stores stay usable from other threads."""
        for es in list(self._open.values()):
            if es._store is not None:
                es._store.close()

    def close(self) -> None:
        """Close every store opened here."""
        for es in self._open.values():
            es.close()
        self._open.clear()
