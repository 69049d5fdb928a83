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


def test_a_store_deleted_under_a_running_bridge_is_recreated_and_used(tmp_path):
    import shutil

    s = DiskStore(tmp_path / "store")
    s.set("a", 1)
    assert s.check() is False
    shutil.rmtree(tmp_path / "store")
    assert s.check() is True
    s.set("b", 2)
    fresh = DiskStore(tmp_path / "store")
    try:
        assert fresh.get("b") == 2 and fresh.get("a") is None
    finally:
        fresh.close()
        s.close()


def test_a_running_bridge_notices_its_store_deleted_and_keeps_recording(start_bridge, upstream):
    import shutil

    import httpx

    from bridge_cli.engine.events import NoticeEvent
    from tests.conftest import config_yaml, json_answer, route_yaml, wait_for
    from tests.test_spend import chat_body, chat_usage
    from tests.test_spend_e2e import settled

    upstream.on("/v1/chat/completions", json_answer(chat_body("gpt-4o-mini", chat_usage(10, 2))))
    b = start_bridge(config_yaml(route_yaml("llm", ("llm-up", upstream.url),
                                            spend="{provider: openai}")))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(trust_env=False, timeout=10) as http:
        assert http.post(b.url("llm") + "/v1/chat/completions", json=body).status_code == 200
        settled(b, 1)
        shutil.rmtree(b.home / "store")
        wait_for(lambda: (b.home / "store" / "cache.db").exists(), timeout=5,
                 what="the store recreated")
        wait_for(lambda: any(isinstance(e, NoticeEvent) and e.level == "error"
                             and "was deleted or replaced while bridge ran" in e.message
                             for e in b.events()), what="a loud notice")
        assert http.post(b.url("llm") + "/v1/chat/completions", json=body).status_code == 200
    assert settled(b, 1)["calls"] == 1  # the new store has the call made after the deletion
