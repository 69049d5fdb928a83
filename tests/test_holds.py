"""What a bridge's requests in flight hold is in the store under an owner that expires;
what a dead owner held is released exactly once, and a live owner's never is."""

from __future__ import annotations

import time

import pytest

from bridge_cli.common.store import make_key
from bridge_cli.config.model import Budget
from bridge_cli.engine.budget import Budgets
from bridge_cli.proxy.holds import Holds
from bridge_cli.store import DiskStore

B = Budget(limit_usd=1_000_000)


@pytest.fixture
def store(tmp_path):
    s = DiskStore(tmp_path / "store")
    yield s
    s.close()


def hold(store, holds: Holds, flow_id: str, amount: int):
    budgets = Budgets(store, time.time)
    reservation, _ = budgets.reserve([("route:r", B)], amount)
    holds.opened(flow_id, (reservation, (("route:r", B),), "r", "/v1/x"))
    return reservation


def test_open_reservations_are_recorded_and_settled_ones_leave_the_record(store):
    budgets = Budgets(store, time.time)
    holds = Holds(store, budgets, owner="host.1.aaaa")
    hold(store, holds, "f1", 300)
    hold(store, holds, "f2", 200)
    holds.write()
    (committed_key,) = store.peek(make_key("holds", "host.1.aaaa"))
    assert store.peek(make_key("holds", "host.1.aaaa")) == {committed_key: 500}
    holds.closed("f1")
    holds.write()
    assert store.peek(make_key("holds", "host.1.aaaa")) == {committed_key: 200}
    holds.closed("f2")
    holds.write()
    assert store.peek(make_key("holds", "host.1.aaaa")) is None


def test_what_a_dead_owner_held_is_released_once(store):
    budgets = Budgets(store, time.time)
    dead = Holds(store, budgets, owner="elsewhere.42.dead")
    hold(store, dead, "f1", 700)
    dead.write()
    store.delete(make_key("owner", "elsewhere.42.dead"))  # its record expired
    assert budgets.committed("route:r", B) == 700
    me = Holds(store, budgets)
    assert me.reclaim() == 700
    assert budgets.committed("route:r", B) == 0
    assert me.reclaim() == 0  # once


def test_a_live_owner_on_another_host_keeps_its_holds(store):
    budgets = Budgets(store, time.time)
    other = Holds(store, budgets, owner="elsewhere.42.live")
    hold(store, other, "f1", 700)
    other.write()
    assert Holds(store, budgets).reclaim() == 0
    assert budgets.committed("route:r", B) == 700


def test_an_owner_whose_process_is_gone_is_dead_at_once(store):
    import socket
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True)
    gone = f"{socket.gethostname()}.{p.stdout.strip()}.beef"
    budgets = Budgets(store, time.time)
    h = Holds(store, budgets, owner=gone)
    hold(store, h, "f1", 250)
    h.write()  # its owner record is fresh, but the process has exited
    assert Holds(store, budgets).reclaim() == 250
