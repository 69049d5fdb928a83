"""The settler: spend lands behind the requests, in batches, and never drops money because
the store was busy. Real diskcache store in tmp_path; the busy store is another
connection holding the write lock, as another bridge process would."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from bridge_cli.config.model import Budget
from bridge_cli.engine.budget import Budgets
from bridge_cli.engine.events import BudgetEvent
from bridge_cli.engine.pricing import Priced
from bridge_cli.errors import StoreError
from bridge_cli.proxy.settler import Settlement, Settler
from bridge_cli.store import DiskStore, Ledger

NOW = 1_764_072_000.0  # a fixed wall time: ledger days and budget periods don't move


@pytest.fixture
def store(tmp_path):
    s = DiskStore(tmp_path / "store")
    yield s
    s.close()


def row(flow_id: str, cost: int) -> dict:
    return {"ts": NOW, "id": flow_id, "route": "llm", "upstream": "up", "model": "gpt-4o",
            "cost_micros": cost, "saved_micros": 0, "status": "priced", "reason": None,
            "tokens": {}, "snapshot": None, "path": "/v1/chat/completions"}


def settle_one(settler, budgets, budget, flow_id, reserve, cost):
    reservation, refusal = budgets.reserve([("route:llm", budget)], reserve)
    assert refusal is None
    settler.submit(Settlement(flow_id, reservation, Priced(cost, "priced"), row(flow_id, cost),
                              (("route:llm", budget),)))


def test_many_settlements_land_in_the_ledger_and_the_budget(store):
    budgets, events = Budgets(store, lambda: NOW), []
    settler = Settler(store, budgets, events.append)
    budget = Budget(limit_usd=10_000_000, period="day")
    for i in range(300):
        settle_one(settler, budgets, budget, f"r{i}", reserve=1000, cost=7)
    assert settler.flush()
    assert len(Ledger(store).rows("2000-01-01")) == 300
    assert budgets.committed("route:llm", budget) == 300 * 7  # reservations replaced by cost
    assert settler.close() == 0


def test_a_busy_store_delays_settlement_but_loses_nothing(store):
    budgets = Budgets(store, lambda: NOW)
    settler = Settler(store, budgets, lambda e: None)
    budget = Budget(limit_usd=1_000_000, period="day")
    reservation, _ = budgets.reserve([("route:llm", budget)], 500)
    locker = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process is mid-write
    try:
        settler.submit(Settlement("a", reservation, Priced(42, "priced"), row("a", 42), ()))
        assert not settler.flush(timeout=0.5)  # waiting for the store, not dropped
        assert settler.pending == 1
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert settler.flush(timeout=10)
    assert [r["cost_micros"] for r in Ledger(store).rows("2000-01-01")] == [42]
    assert budgets.committed("route:llm", budget) == 42
    settler.close()


def test_a_batch_lands_whole_or_not_at_all(store):
    """A ledger row without its settlement (or the reverse) would let two reports disagree."""
    budgets = Budgets(store, lambda: NOW)
    budget = Budget(limit_usd=1_000_000, period="day")
    reservation, _ = budgets.reserve([("route:llm", budget)], 500)
    gate = threading.Event()
    real_append = Ledger.append_many

    def failing_once(self, rows):
        if not gate.is_set():
            gate.set()
            raise StoreError("store: set failed: busy")
        return real_append(self, rows)

    settler = Settler(store, budgets, lambda e: None)
    settler.ledger.append_many = failing_once.__get__(settler.ledger)
    settler.submit(Settlement("a", reservation, Priced(42, "priced"), row("a", 42), ()))
    assert settler.flush(timeout=10)
    # the first try's settlement was rolled back with its failed row: counted once, not twice
    assert budgets.committed("route:llm", budget) == 42
    assert len(Ledger(store).rows("2000-01-01")) == 1
    settler.close()


def test_close_reports_what_a_dead_store_could_not_take(store, caplog):
    budgets = Budgets(store, lambda: NOW)
    settler = Settler(store, budgets, lambda e: None)
    locker = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        settler.submit(Settlement("gone", None, Priced(1_500_000, "priced"),
                                  row("gone", 1_500_000), ()))
        t0 = time.monotonic()
        assert settler.close(grace=0.5) == 1
        assert time.monotonic() - t0 < 3.0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert "gone" in caplog.text and "1.5" in caplog.text


def test_crossing_the_alert_threshold_is_published_once(store):
    budgets, events = Budgets(store, lambda: NOW), []
    settler = Settler(store, budgets, events.append)
    budget = Budget(limit_usd=1000, period="day", alert_at=0.5)
    for i in range(4):
        settle_one(settler, budgets, budget, f"r{i}", reserve=100, cost=200)
        assert settler.flush()
    alerts = [e for e in events if isinstance(e, BudgetEvent) and e.what == "alert"]
    assert len(alerts) == 1 and alerts[0].scope == "route:llm"
    settler.close()


def test_reservations_made_together_never_pass_the_limit(store):
    budgets = Budgets(store, lambda: NOW)
    settler = Settler(store, budgets, lambda e: None)
    budget = Budget(limit_usd=1000, period="day")
    futures = [settler.reserve([("route:llm", budget)], 300) for _ in range(10)]
    results = [f.result(timeout=5) for f in futures]
    admitted = [r for r, refusal in results if refusal is None]
    assert len(admitted) == 3  # 3 x 300 fits in 1000; a fourth would not
    assert budgets.committed("route:llm", budget) == 900
    settler.close()


def test_a_reservation_waits_for_a_busy_store_then_fails_closed(store):
    budgets = Budgets(store, lambda: NOW)
    settler = Settler(store, budgets, lambda e: None, reserve_patience=0.3)
    budget = Budget(limit_usd=1000, period="day")
    locker = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="busy"):
            settler.reserve([("route:llm", budget)], 300).result(timeout=5)
        pending = settler.reserve([("route:llm", budget)], 300)
        time.sleep(0.1)  # the store frees up while the reservation is still patient
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    reservation, refusal = pending.result(timeout=5)
    assert refusal is None and reservation.amount == 300
    settler.close()


def test_a_reservation_is_answered_at_once_when_the_store_is_free(store):
    """No thread hop on the common path: the future is done when `reserve` returns."""
    budgets = Budgets(store, time.time)
    settler = Settler(store, budgets, lambda e: None)
    try:
        future = settler.reserve([("route:r", Budget(limit_usd=1_000))], 400)
        assert future.done()
        reservation, refusal = future.result()
        assert refusal is None and reservation.amount == 400
        assert budgets.committed("route:r", Budget(limit_usd=1_000)) == 400
    finally:
        settler.close()


def test_a_busy_store_sends_the_reservation_to_the_writer_thread_which_waits(store):
    """While another connection holds the write lock, the impatient try fails at once and
    the writer thread reserves as soon as the lock is free: no refusal for a short wait."""
    budgets = Budgets(store, time.time)
    settler = Settler(store, budgets, lambda e: None, reserve_patience=3.0)
    other = DiskStore(store.directory)
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with other.batch():
            other.set("x", 1)
            locked.set()
            release.wait(5)

    t = threading.Thread(target=hold_lock)
    t.start()
    try:
        locked.wait(5)
        future = settler.reserve([("route:r", Budget(limit_usd=1_000))], 400)
        assert not future.done()  # handed to the writer thread
        time.sleep(0.2)
        release.set()
        reservation, refusal = future.result(timeout=5)
        assert refusal is None and reservation.amount == 400
    finally:
        release.set()
        t.join()
        other.close()
        settler.close()
