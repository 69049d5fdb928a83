"""DiskStore: the embedded Store, on diskcache, with a Disk that never unpickles."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW, MODE_TEXT, UNKNOWN

from bridge_cli.common.redact import redact_url
from bridge_cli.common.store import Store
from bridge_cli.errors import StoreError, UsageError

log = logging.getLogger("bridge.store")

MODE_JSON = 16  # ours, beside diskcache's 1-4: JSON text, in the row or in a file
MIN_FILE_SIZE = 2**15  # bytes: larger values live in files beside the database
BUSY_TIMEOUT = 0.05  # seconds: a busy store is a miss, not a stall on the event loop
# Eviction runs after writes, not inside each one: diskcache's own per-write cull measures
# the database on every set, which was a quarter of a busy bridge's store time. The bound
# holds to within CULL_SHARE of size_limit, checked at most CULL_INTERVAL apart.
CULL_INTERVAL = 0.5  # seconds
CULL_SHARE = 0.02  # of size_limit written since the last eviction makes the next one due
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Errors that mean "the store is busy or broken" rather than "the caller has a bug".
_STORAGE_ERRORS = (diskcache.Timeout, sqlite3.Error, OSError)


# diskcache's own row layout (its stable on-disk format), as Cache.get reads it.
_PEEK = ("SELECT rowid, expire_time, tag, mode, filename, value FROM Cache"
         " WHERE key = ? AND raw = ? AND (expire_time IS NULL OR expire_time > ?)")
_TOUCH = "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = ?"


class RefusedValue(Exception):
    """A row bridge will not decode: pickled (by diskcache's default Disk) or of unknown mode."""


class SafeDisk(diskcache.Disk):
    """A diskcache Disk for str keys and bytes/str/int/float/JSON values; it never unpickles."""

    def __init__(self, directory: str, min_file_size: int = MIN_FILE_SIZE, **_ignored: Any):
        # Cache turns every `disk_*` row of its Settings table into a keyword here, so a
        # planted setting must be harmless: pickle_protocol and the rest are dropped.
        super().__init__(directory, min_file_size=min_file_size)
        self.written = 0  # about how many bytes `store` took: what makes an eviction due

    def put(self, key: Any) -> tuple[Any, bool]:
        """Convert a str key to its database form (other key types would be pickled)."""
        if type(key) is not str:
            raise TypeError(f"store keys are str, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        """Convert a database key back; a pickled key (raw false) is refused."""
        if not raw:
            raise RefusedValue("the key is pickled")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, Any, Any]:
        """Convert value to (size bytes, mode, filename, db value); JSON types are tagged."""
        kind = type(value)
        if read:
            raise TypeError("the store does not take file objects")
        if kind is float and not math.isfinite(value):
            raise ValueError("the store keeps only finite floats (sqlite turns NaN into NULL)")
        if kind in (str, bytes, float) or (kind is int and _INT64_MIN <= value <= _INT64_MAX):
            self.written += len(value) if kind in (str, bytes) else 8
            return super().store(value, False, key=key)
        if kind in (dict, list, bool, int) or value is None:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
            self.written += len(text)
            if len(text) < self.min_file_size:
                return 0, MODE_JSON, None, text
            filename, full_path = self.filename(key, value)
            self._write(full_path, io.StringIO(text), "x", "UTF-8")
            return os.path.getsize(full_path), MODE_JSON, filename, None
        raise TypeError(f"the store keeps bytes, str, numbers and JSON, not {kind.__name__}")

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """Convert a row back to its value; pickle mode (or any unknown mode) is refused."""
        if mode in (MODE_RAW, MODE_BINARY, MODE_TEXT):
            return super().fetch(mode, filename, value, read)
        if mode == MODE_JSON:
            if value is None:
                with open(os.path.join(self._directory, filename), encoding="utf-8") as f:
                    value = f.read()
            return json.loads(value)
        # MODE_PICKLE: calling pickle.load here would run code from whoever wrote the row
        # (CVE-2025-69872); diskcache's JSONDisk still does, which is why this class exists.
        raise RefusedValue(f"the value is stored in mode {mode} (pickle), which bridge never reads")


def _check_key(key: str) -> None:
    if type(key) is not str or not key:
        raise TypeError(f"store keys are non-empty str, not {key!r}")


def _next_prefix(prefix: str) -> str | None:
    """The smallest str above every str starting with prefix, or None if there is none."""
    # sqlite compares TEXT by its UTF-8 bytes, which sort like code points.
    cp = ord(prefix[-1]) + 1
    if 0xD800 <= cp <= 0xDFFF:  # surrogates can't be encoded; skip over them
        cp = 0xE000
    return None if cp > 0x10FFFF else prefix[:-1] + chr(cp)


class DiskStore:
    """The embedded Store: diskcache in one directory, process-safe, size-bounded (bytes)."""

    def __init__(self, directory: Path, size_limit: int = 2**30, timeout: float = BUSY_TIMEOUT,
                 eviction_policy: str = "least-recently-stored"):
        """Open (or create, mode 0700) the store in directory; size_limit: bytes, timeout: s.
        The response cache uses eviction_policy="least-recently-used"."""
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory),
                timeout=timeout,
                disk=SafeDisk,
                size_limit=size_limit,
                # Pinned rather than read back from the Settings table, which anyone who
                # can write the directory controls (statistics=1 would make reads lock).
                eviction_policy=eviction_policy,
                statistics=0,
                disk_min_file_size=MIN_FILE_SIZE,
                cull_limit=0,  # evicted by `evict`, after writes (see CULL_INTERVAL)
            )
        except (sqlite3.OperationalError, diskcache.Timeout, OSError) as e:
            raise StoreError(f"store {self.directory} cannot be opened: {e}") from None
        except (sqlite3.DatabaseError, KeyError, ValueError, TypeError) as e:
            raise StoreError(
                f"store {self.directory} is corrupt ({e}); it can be deleted "
                f"(rm -r {self.directory}), losing cached responses, recordings and spend"
            ) from None

        self._size_limit = size_limit
        self._policy = eviction_policy
        self._timeout = timeout
        self._identity = self._db_identity()
        self._evicted_written = 0  # the Disk's `written` at the last eviction
        self._evicted_at = time.monotonic()
        self._batches = 0  # open `batch` blocks: eviction waits for the outermost to end

    def __repr__(self) -> str:
        return f"DiskStore({str(self.directory)!r})"

    def _wrote(self) -> None:
        if self._batches:
            return
        if (self._cache.disk.written - self._evicted_written >= self._size_limit * CULL_SHARE
                or time.monotonic() - self._evicted_at >= CULL_INTERVAL):
            self.evict()

    def evict(self) -> int:
        """Drop expired entries, then the least recent ones until the store is within its
        size limit; how many went. Runs by itself after writes; a busy store tries later."""
        self._evicted_written, self._evicted_at = self._cache.disk.written, time.monotonic()
        try:
            return self._cache.cull()
        except diskcache.Timeout as e:
            return e.args[0] if e.args else 0
        except _STORAGE_ERRORS as e:
            log.warning("store %s: eviction failed: %s", self.directory, e)
            return 0

    def _error(self, op: str, key: str, e: BaseException) -> StoreError:
        reason = "busy" if isinstance(e, diskcache.Timeout) else str(e) or type(e).__name__
        return StoreError(f"store {self.directory}: {op} {key!r} failed: {reason}")

    @contextmanager
    def _writing(self, op: str, key: str) -> Iterator[None]:
        try:
            yield
        except _STORAGE_ERRORS as e:
            raise self._error(op, key, e) from None

    def get(self, key: str) -> Any | None:
        """Return the value at key, or None when missing, expired, busy or unreadable."""
        _check_key(key)
        try:
            return self._cache.get(key)
        except (*_STORAGE_ERRORS, RefusedValue, ValueError) as e:
            reason = str(e) or type(e).__name__
            log.warning("store %s: reading %r as a miss: %s", self.directory, key, reason)
            return None

    def peek(self, key: str) -> Any | None:
        """Like get, but the read is not recorded: no write on the read path whatever the
        eviction policy (the response cache records its hits in batches with `touch`)."""
        _check_key(key)
        cache = self._cache
        try:
            db_key, raw = cache._disk.put(key)
            rows = cache._sql(_PEEK, (db_key, raw, time.time())).fetchall()
            if not rows:
                return None
            ((_rowid, _expire, _tag, mode, filename, db_value),) = rows
            return cache._disk.fetch(mode, filename, db_value, False)
        except (*_STORAGE_ERRORS, RefusedValue, ValueError) as e:
            # A file removed between the row and the read (eviction) is a plain miss.
            if not isinstance(e, FileNotFoundError):
                log.warning("store %s: reading %r as a miss: %s", self.directory, key,
                            str(e) or type(e).__name__)
            return None

    def touch(self, keys: list[str]) -> None:
        """Mark keys as used now, for least-recently-used eviction (call off the event loop)."""
        if not keys:
            return
        now = time.time()
        with self._writing("touch", keys[0]):
            with self._cache.transact():
                for key in keys:
                    db_key, raw = self._cache._disk.put(key)
                    self._cache._sql(_TOUCH, (now, db_key, raw))

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store bytes or a JSON-compatible value at key; ttl: seconds, None for no expiry."""
        _check_key(key)
        with self._writing("set", key):
            self._cache.set(key, value, expire=ttl)
        self._wrote()

    def delete(self, key: str) -> bool:
        """Remove key; return whether it existed."""
        _check_key(key)
        with self._writing("delete", key):
            return bool(self._cache.delete(key))

    def scan(self, prefix: str) -> Iterator[str]:
        """Yield the live str keys starting with prefix, in key order (StoreError if busy)."""
        query = (
            "SELECT key FROM Cache WHERE raw = 1 AND typeof(key) = 'text'"
            " AND (expire_time IS NULL OR expire_time > ?)"
        )
        args: list[Any] = [time.time()]
        if prefix:
            query += " AND key >= ?"
            args.append(prefix)
            if upper := _next_prefix(prefix):
                query += " AND key < ?"
                args.append(upper)
        # diskcache's own iterkeys walks every key and decodes each one through the Disk;
        # a range query on its (key, raw) index touches only this prefix and never a
        # pickled key. The Cache table layout is diskcache's stable on-disk format.
        with self._writing("scan", prefix):
            rows = self._cache._sql(query + " ORDER BY key", args).fetchall()
        return iter([k for (k,) in rows if k.startswith(prefix)])

    def _read_int(self, key: str) -> tuple[int, float | None]:
        """The integer at key and its expiry (epoch seconds); a miss or unreadable row is 0."""
        try:
            value, expire_at = self._cache.get(key, expire_time=True)
        except (RefusedValue, ValueError) as e:
            log.warning("store %s: unreadable %r counts as 0: %s", self.directory, key, e)
            return 0, None
        if value is None:
            return 0, None
        if type(value) is not int:
            raise StoreError(
                f"store {self.directory}: {key!r} holds a {type(value).__name__}, not an integer"
            )
        return value, expire_at

    def get_int(self, key: str) -> int:
        """The integer at key, 0 when missing; StoreError when busy or not an integer, so
        that money is never read as 0 because the store could not answer."""
        _check_key(key)
        with self._writing("read", key):
            return self._read_int(key)[0]

    def _write_int(self, key: str, value: int, expire_at: float | None) -> None:
        # Keep the key's expiry: a counter for a period dies with its period.
        ttl = None if expire_at is None else max(expire_at - time.time(), 0.0)
        self._cache.set(key, value, expire=ttl)

    def incr(self, key: str, delta: int = 1) -> int:
        """Atomically add delta to the integer at key (missing counts as 0); return the result."""
        _check_key(key)
        with self._writing("incr", key), self._cache.transact():
            current, expire_at = self._read_int(key)
            self._write_int(key, current + delta, expire_at)
        self._wrote()
        return current + delta

    def reserve(self, key: str, amount: int, limit: int) -> bool:
        """Atomically add amount (>= 0) to the integer at key only if it stays <= limit."""
        _check_key(key)
        if amount < 0:
            raise ValueError(f"reserve amount must be >= 0, not {amount}")
        with self._writing("reserve", key), self._cache.transact():
            current, expire_at = self._read_int(key)
            if current + amount > limit:
                return False
            self._write_int(key, current + amount, expire_at)
        self._wrote()
        return True

    def release(self, key: str, amount: int) -> int:
        """Atomically subtract amount (>= 0) from the integer at key, floor 0; return it."""
        _check_key(key)
        if amount < 0:
            raise ValueError(f"release amount must be >= 0, not {amount}")
        with self._writing("release", key), self._cache.transact():
            current, expire_at = self._read_int(key)
            left = max(current - amount, 0)
            if left != current:
                self._write_int(key, left, expire_at)
            return left

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside is one transaction: all land or none (StoreError when busy).
        One commit for many writes is what keeps the spend ledger cheap under load."""
        self._batches += 1
        try:
            with self._writing("batch", ""), self._cache.transact():
                yield
        finally:
            self._batches -= 1
        self._wrote()

    def _db_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory / diskcache.core.DBNAME)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> bool:
        """Whether the store's database was deleted or replaced under this process (someone
        removed the directory): if so, reopen it where it belongs (True); the caller warns."""
        if self._db_identity() == self._identity and self._identity is not None:
            return False
        old = self._cache
        self.__init__(self.directory, self._size_limit, self._timeout, self._policy)
        try:
            old.close()
        except Exception:  # noqa: BLE001 - its files are gone already
            pass
        return True

    def impatient(self) -> DiskStore:
        """The same store through a handle that never waits: a busy store fails at once
        (StoreError), for work on the event loop that has a patient path to fall back to."""
        return DiskStore(self.directory, self._size_limit, timeout=0,
                         eviction_policy=self._policy)

    def close(self) -> None:
        """Close the database connections of this thread."""
        self._cache.close()

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_cache_store(directory: Path, size_limit: int = 2**30) -> DiskStore:
    """A response cache or a cassette: a directory of its own, LRU-evicted at size_limit
    bytes, so cached bodies never evict spend or breaker state."""
    # Least-recently-used, but reads go through `peek` (diskcache's LRU would write the
    # access time on every hit: p99 2-4 ms at 100k entries) and EntryStore records hits in
    # batches with `touch`, for an entry and its summary together so they age together.
    return DiskStore(directory, size_limit=size_limit, eviction_policy="least-recently-used")


def open_store(url: str | None, home: Path) -> Store:
    """Open the store the config's `store:` URL names; none means diskcache in home/store."""
    if not url or not url.strip():
        return DiskStore(home / "store")
    if url.strip().lower().startswith(("redis://", "rediss://")):
        raise UsageError(
            "store: redis:// is not supported yet; remove `store:` to use the embedded "
            "store in $BRIDGE_HOME"
        )
    raise UsageError(
        f"store: {redact_url(url)!r} is not a store URL bridge knows; remove `store:` to use "
        "the embedded store in $BRIDGE_HOME"
    )
