"""All of a bridge's money writes on one thread: budget reservations before requests
leave, and behind them settlements, ledger rows and alert checks, in batches, one store
transaction per batch. One writer means requests of this process never wait on each
other's locks (a reservation waits at most for the batch being written).

Money is never dropped because the store was busy: a batch of settlements that fails is
retried (with a growing pause) until it lands; `close` keeps trying for a grace period
and then says in the log exactly what could not be written. A reservation the store
can't take within RESERVE_PATIENCE fails, and the request is refused (fail closed).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from bridge_cli.common.store import Store
from bridge_cli.config.model import Budget
from bridge_cli.engine.budget import Budgets, Reservation
from bridge_cli.engine.events import BudgetEvent, NoticeEvent
from bridge_cli.engine.money import usd
from bridge_cli.engine.pricing import Priced
from bridge_cli.engine.spend import ledger_row
from bridge_cli.errors import StoreError
from bridge_cli.proxy.holds import Holds
from bridge_cli.store.ledger import Ledger

log = logging.getLogger("bridge.spend")
INTERVAL = 0.05  # seconds between batches while requests keep finishing
MAX_BATCH = 500  # settlements in one transaction
MAX_PAUSE = 1.0  # seconds between tries of a batch the store refused
RESERVE_PATIENCE = 2.0  # seconds a reservation waits for a busy store before it fails
CHECK_EVERY = 1.0  # seconds between looks for a store deleted under the running bridge


@dataclass(frozen=True)
class Settlement:
    """One finished request's money: its reservation, its price, its ledger row."""

    flow_id: str
    reservation: Reservation | None
    priced: Priced
    row: dict | None
    budgets: tuple[tuple[str, Budget], ...]


class Settler:
    """Applies Settlements on one thread; `publish` gets budget alerts and notices
    (thread-safe)."""

    def __init__(self, store: Store, budgets: Budgets, publish: Callable[[BudgetEvent], None],
                 reserve_patience: float = RESERVE_PATIENCE) -> None:
        self.store = store
        self.reserve_patience = reserve_patience  # seconds
        self.budgets = budgets
        self.ledger = Ledger(store)
        self.publish = publish
        self._queue: deque[Settlement] = deque()
        self._holds: deque[tuple[list, int, Future]] = deque()
        self.holds = Holds(store, budgets)
        self._checked = time.monotonic()
        self._wake = threading.Event()
        self._closing = False
        self._busy = False  # a batch is being written (its items are still queued)
        self._deadline = float("inf")
        try:  # reservations try this handle first, without waiting (see `reserve`)
            self._quick: Budgets | None = Budgets(store.impatient(), budgets.wall)
        except (AttributeError, StoreError):
            self._quick = None
        self._thread = threading.Thread(target=self._run, name="bridge-settle", daemon=True)
        self._thread.start()

    def reserve(self, budgets: list[tuple[str, Budget]], amount: int) -> Future:
        """Hold `amount` against `budgets` (Budgets.reserve); the future gives (Reservation,
        Refusal | None), or raises StoreError. Tried at once on the caller's thread through
        a handle that never waits (the future is then done on return: no thread hop); when
        the store is busy, on the writer thread, which waits for it."""
        future: Future = Future()
        if self._quick is not None and not self._holds:
            try:
                with self._quick.store.batch():
                    result = _attempt(self._quick.reserve, budgets, amount)
                _answer(future, result)
                return future
            except StoreError:
                pass  # busy: the patient path below
        self._holds.append((budgets, amount, future))
        self._wake.set()
        return future

    def opened(self, flow_id: str, reservation: Reservation,
               budgets: tuple[tuple[str, Budget], ...], route: str, path: str) -> None:
        """A reservation now held for a request in flight (call on the event loop); `submit`
        closes it. What is still open at `close` settles at its amount, estimated; what a
        killed bridge held is given back by the next one (proxy/holds.py)."""
        self.holds.opened(flow_id, (reservation, budgets, route, path))

    def submit(self, settlement: Settlement) -> None:
        """Queue a settlement (any thread); it lands within a batch interval. The writer is
        not woken for it: under load a wake-up per request costs the event loop more (the
        two threads trade the GIL) than the batch write does."""
        self.holds.closed(settlement.flow_id)
        self._queue.append(settlement)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until everything submitted so far has landed; False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._queue or self._busy:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, grace: float = 10.0) -> int:
        """Land what is queued, trying for at most `grace` seconds; returns how many
        settlements could not be written (each logged)."""
        for flow_id, (reservation, budgets, route, path) in self.holds.open_entries():
            # cut by the shutdown: the upstream may bill it, so it counts as reserved
            priced = Priced(reservation.amount, "estimated",
                            reason="bridge stopped before the answer was complete")
            row = ledger_row(self.budgets.wall(), flow_id, route, None, priced, path,
                             tuple(dict.fromkeys(s for s, _ in reservation.held)))
            self.submit(Settlement(flow_id, reservation, priced, row, budgets))
        self._closing = True
        self._deadline = time.monotonic() + grace
        self._wake.set()
        self._thread.join(grace + 1.0)
        left = list(self._queue)
        if not left:
            self.holds.end()
        for s in left:
            cost = s.priced.cost if s.priced.status not in ("free", "saved") else 0
            log.error("spend of request %s not recorded (store unavailable): $%s",
                      s.flow_id, usd(cost))
        return len(left)

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # this thread's database connections (each thread has its own)
            self.store.close()

    def close_quick(self) -> None:
        """Close the impatient handle's connection of the calling thread (the event loop's)."""
        if self._quick is not None:
            self._quick.store.close()

    def _loop(self) -> None:
        self._keep_holds(reclaim=True)
        while True:
            self._wake.wait(INTERVAL)
            self._wake.clear()
            if time.monotonic() - self._checked >= CHECK_EVERY:
                self._check_store()
            if self.holds.due() and not self._queue:  # a batch writes them otherwise
                self._keep_holds(reclaim=self.holds.reclaim_due())
            elif self.holds.reclaim_due():
                self._keep_holds(reclaim=True)
            if self._holds:
                self._hold([self._holds.popleft() for _ in range(len(self._holds))])
            if self._closing and (not self._queue or time.monotonic() > self._deadline):
                return
            if self._queue:
                self._busy = True
                try:
                    self._land(list(itertools.islice(self._queue, MAX_BATCH)))
                finally:
                    self._busy = False

    def _hold(self, holds: list[tuple[list, int, Future]]) -> None:
        """Make every waiting reservation in one transaction; answer each future."""
        pause, deadline = INTERVAL, time.monotonic() + self.reserve_patience
        while True:
            results: list = []
            try:
                with self.store.batch():
                    for budgets, amount, _ in holds:
                        results.append(_attempt(self.budgets.reserve, budgets, amount))
                break
            except StoreError as e:
                if time.monotonic() + pause > deadline:
                    results = [e] * len(holds)
                    break
                time.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE)
        for (_, _, future), result in zip(holds, results, strict=True):
            _answer(future, result)

    def _land(self, batch: list[Settlement]) -> None:
        """Write one batch, retrying until it lands (or closing runs out of time)."""
        pause = INTERVAL
        while True:
            try:
                with self.store.batch():
                    self.budgets.settle_many(
                        [(s.reservation, None if s.priced.status in ("free", "saved")
                          else s.priced.cost) for s in batch if s.reservation is not None])
                    rows = [s.row for s in batch if s.row is not None]
                    if rows:
                        self.ledger.append_many(rows)
                    self.holds.write()  # what is still open, as of these settlements
                break
            except StoreError as e:
                if self._closing and time.monotonic() > self._deadline:
                    return
                log.warning("spend of %d request(s) waits for the store (%s); retrying",
                            len(batch), e)
                time.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE)
        for _ in batch:
            self._queue.popleft()
        self._alerts(batch)

    def _check_store(self) -> None:
        """A store deleted under a running bridge is noticed, said loudly and recreated."""
        self._checked = time.monotonic()
        for store in (self.store, self._quick.store if self._quick else None):
            try:
                if store is not None and store.check() and store is self.store:
                    message = (f"the store {getattr(store, 'directory', '')} was deleted or replaced while "
                               "bridge ran: spend history and budget counters written before "
                               "are gone; bridge recreated it and records from now on")
                    log.error("%s", message)
                    self.publish(NoticeEvent("error", message))
                    with self.store.batch():
                        self.holds.write(force=True)
            except Exception as e:  # noqa: BLE001 - checked again next round
                log.warning("could not check the store: %s", e)

    def _keep_holds(self, reclaim: bool) -> None:
        """Record what is held and refresh the owner; give back what dead bridges held."""
        try:
            with self.store.batch():
                self.holds.write(force=True)
            if reclaim:
                self.holds.reclaim()
        except StoreError as e:  # the next batch or round tries again
            log.warning("could not record or reclaim held reservations: %s", e)

    def _alerts(self, batch: list[Settlement]) -> None:
        seen: dict[str, Budget] = {}
        for s in batch:
            seen.update(s.budgets)
        for scope, budget in seen.items():
            try:
                if self.budgets.crossed_alert(scope, budget):
                    committed = self.budgets.committed(scope, budget)
                    self.publish(BudgetEvent(scope, "alert", usd(committed),
                                             usd(budget.limit_usd), budget.action))
            except StoreError as e:  # an alert is advice: the next batch checks again
                log.warning("could not check the alert of budget %s: %s", scope, e)


def _answer(future: Future, result) -> None:
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _attempt(fn, *args):
    """fn(*args), or the exception it raised: one request's bug fails that request alone.
    A StoreError still raises, so the whole transaction is tried again."""
    try:
        return fn(*args)
    except StoreError:
        raise
    except Exception as e:
        log.exception("a budget reservation failed")
        return e
