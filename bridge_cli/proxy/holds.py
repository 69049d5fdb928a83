"""Reservations that outlive their process: each bridge keeps, in the store, what its
requests in flight hold against each budget, under an owner record that expires unless it
is refreshed; any bridge gives back what a dead owner held. So money reserved by a bridge
that was killed (SIGKILL, a crash, a power cut) does not stay counted until its budget
period ends.

    owner:<owner>   1, expiring OWNER_TTL seconds after the last refresh
    holds:<owner>   {"budget:committed:...": micro-dollars} held by its requests in flight

The holds record is written in the same store transaction as the settlements the settler
lands, from the requests still open after that batch: a settled request is never both
settled and held, so a dead owner's holds are released exactly once and never money that
was spent. A reservation made since the last write is not in the record yet; if the
process dies before the next write it stays counted (the safe side: a budget refuses
early, it is never passed). An owner is dead when its record expired or, on this machine,
when its process is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from bridge_cli.common.store import Store, make_key, split_key
from bridge_cli.engine.budget import Budgets
from bridge_cli.errors import StoreError

log = logging.getLogger("bridge.spend")
OWNER_TTL = 60.0  # seconds an owner record lives without a refresh
REFRESH = 10.0  # seconds between refreshes of this bridge's owner record
RECLAIM_EVERY = 30.0  # seconds between looks for dead owners


def new_owner() -> str:
    """An owner id: host, process id and a random part (process ids are reused)."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _alive_here(owner: str) -> bool | None:
    """Whether an owner on this host still runs (None: another host, can't tell)."""
    head, _, _random = owner.rpartition(".")
    host, _, pid = head.rpartition(".")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class Holds:
    """What this bridge's requests in flight hold; written and reclaimed by the settler."""

    def __init__(self, store: Store, budgets: Budgets, owner: str | None = None) -> None:
        self.store = store
        self.budgets = budgets
        self.owner = owner or new_owner()
        self._open: dict[str, tuple] = {}  # flow id -> (reservation, budgets, route, path)
        self._lock = threading.Lock()
        self._written: dict[str, int] = {}
        self._refreshed = float("-inf")  # monotonic seconds of the last owner refresh
        self._reclaimed = float("-inf")
        self._dirty = False  # opened or closed since the last write

    def opened(self, flow_id: str, entry: tuple) -> None:
        with self._lock:
            self._open[flow_id] = entry
            self._dirty = True

    def closed(self, flow_id: str) -> None:
        with self._lock:
            if self._open.pop(flow_id, None) is not None:
                self._dirty = True

    def open_entries(self) -> list[tuple[str, tuple]]:
        with self._lock:
            return list(self._open.items())

    def held(self) -> dict[str, int]:
        """Micro-dollars held per committed-budget key by the requests still open."""
        out: dict[str, int] = {}
        for _, (reservation, *_rest) in self.open_entries():
            for key in self.budgets.committed_keys(reservation):
                out[key] = out.get(key, 0) + reservation.amount
        return out

    def write(self, force: bool = False) -> None:
        """Record what is held now and refresh the owner (inside the caller's transaction);
        cheap when nothing changed and no refresh is due."""
        now = time.monotonic()
        self._dirty = False  # before the snapshot: a change after it makes the next write
        held = self.held()
        if not force and held == self._written and now - self._refreshed < REFRESH:
            return
        self.store.set(make_key("owner", self.owner), 1, OWNER_TTL)
        key = make_key("holds", self.owner)
        if held:
            self.store.set(key, held)
        elif self._written or force:
            self.store.delete(key)
        self._written, self._refreshed = held, now

    def due(self) -> bool:
        """A write is due (something changed, or the owner needs its refresh)."""
        return self._dirty or time.monotonic() - self._refreshed >= REFRESH

    def reclaim_due(self) -> bool:
        return time.monotonic() - self._reclaimed >= RECLAIM_EVERY

    def reclaim(self) -> int:
        """Give back what dead owners held; micro-dollars released (StoreError if busy)."""
        self._reclaimed = time.monotonic()
        released = 0
        for key in list(self.store.scan("holds:")):
            owner = split_key(key)[1]
            if owner == self.owner or not self._dead(owner):
                continue
            with self.store.batch():
                held = self.store.peek(key)
                if not isinstance(held, dict):
                    continue  # another bridge got there first
                for committed, amount in held.items():
                    if isinstance(committed, str) and type(amount) is int and amount > 0:
                        self.store.release(committed, amount)
                        released += amount
                self.store.delete(key)
            log.warning("released $%.6f that bridge %s held for requests when it stopped "
                        "without settling them", released / 1e6, owner)
        return released

    def _dead(self, owner: str) -> bool:
        if self.store.peek(make_key("owner", owner)) is None:
            return True
        return _alive_here(owner) is False

    def end(self) -> None:
        """This bridge stops with nothing held: remove its records."""
        try:
            with self.store.batch():
                self.store.delete(make_key("holds", self.owner))
                self.store.delete(make_key("owner", self.owner))
        except StoreError as e:
            log.warning("could not remove this bridge's owner record: %s", e)

