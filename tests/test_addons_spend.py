"""SpendAddon and BudgetAddon alone: what a request asks the upstream for, what an answer
costs, what the ledger keeps, and refusals by budget. Real diskcache store in tmp_path;
helpers shared with test_addons.py."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import genai_prices
import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from bridge_cli.engine.budget import Budgets
from bridge_cli.engine.cache import ReplayMode
from bridge_cli.engine.clock import ManualClock
from bridge_cli.engine.coalesce import InFlight
from bridge_cli.engine.events import BudgetEvent, EventBus
from bridge_cli.engine.pricing import StreamUsage, UsageStripper, to_micros, worst_case
from bridge_cli.engine.replies import error_reply
from bridge_cli.engine.streams import pass_end, pass_piece
from bridge_cli.proxy.addons.budget import BudgetAddon
from bridge_cli.proxy.addons.cache import CacheAddon
from bridge_cli.proxy.addons.keep import KeepAddon
from bridge_cli.proxy.addons.spend import SpendAddon
from bridge_cli.proxy.cache_writer import CacheWriter
from bridge_cli.proxy.forwarder import Forwarder, Handoff
from bridge_cli.proxy.outbound import UpstreamResponse
from bridge_cli.proxy.respond import apply_reply, respond
from bridge_cli.proxy.settler import Settler
from bridge_cli.store import Ledger, open_store
from bridge_cli.store.responses import ResponseStores
from tests.test_addons import arrive, config, error_of, st, upstream_answer
from tests.test_spend import chat_body, chat_stream, chat_usage

LLM = """\
version: 2
routes:
  - name: llm
    listen: 127.0.0.1:8082
    upstreams: [{name: openai-up, url: "http://127.0.0.1:9"}]
    spend: {provider: openai, inject_usage: true}
    budget: {limit_usd: %(limit)s, period: day, action: %(action)s, alert_at: %(alert)s}
"""
CACHED_LLM = """\
version: 2
routes:
  - name: llm
    listen: 127.0.0.1:8082
    upstreams: [{name: openai-up, url: "http://127.0.0.1:9"}]
    spend: {provider: openai, inject_usage: true}
    cache: {ttl: 10m, methods: [POST]}
"""
CHAT = "/v1/chat/completions"
QUESTION = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Capital of France?"}],
            "max_tokens": 100}


def llm(limit: str = "100", action: str = "block", alert: str = "80%"):
    return config(LLM % {"limit": limit, "action": action, "alert": alert})


def ask(cfg, body: dict = QUESTION):
    return arrive(cfg, "llm", CHAT, method="POST", body=body)


@pytest.fixture
def store(tmp_path):
    s = open_store(None, tmp_path)
    yield s
    s.close()


@pytest.fixture
def bus_events():
    bus, events = EventBus(), []
    bus.subscribe(events.append)
    return bus, events


SETTLERS: list[Settler] = []


@pytest.fixture
async def settled():
    """`await settled()`: the spend addon's work behind the request (settling, the ledger,
    alerts: the settler's thread) is done."""
    loop = asyncio.get_running_loop()

    async def wait() -> None:
        for settler in SETTLERS:
            assert await loop.run_in_executor(None, settler.flush)
        await asyncio.sleep(0)  # alerts are published on the loop

    yield wait
    for settler in SETTLERS:
        settler.close(1.0)
    SETTLERS.clear()


def settler_for(bus, budgets) -> Settler:
    """One settler per Budgets (as a bridge has one), publishing on `bus` from the loop."""
    for settler in SETTLERS:
        if settler.budgets is budgets:
            return settler
    try:
        loop = asyncio.get_running_loop()
        publish = lambda e: loop.call_soon_threadsafe(bus.publish, e)  # noqa: E731
    except RuntimeError:  # a test without a loop: nothing will be published
        publish = bus.publish
    settler = Settler(budgets.store, budgets, publish, reserve_patience=0.2)
    SETTLERS.append(settler)
    return settler


def spending(bus, budgets) -> SpendAddon:
    return SpendAddon(settler_for(bus, budgets), ManualClock())


def guarding(bus, budgets) -> BudgetAddon:
    return BudgetAddon(bus, settler_for(bus, budgets))


def spend_addon(bus, store) -> SpendAddon:
    return spending(bus, Budgets(store, ManualClock().wall))


def ledger(store) -> list[dict]:
    return Ledger(store).rows("2000-01-01")


# --- SpendAddon ------------------------------------------------------------------------------


def test_inject_usage_asks_an_openai_stream_for_usage_and_strips_it_for_the_client(
        store, bus_events):
    addon = spend_addon(bus_events[0], store)
    f = ask(llm(), {**QUESTION, "stream": True})
    with taddons.context(addon):
        addon.request(f)
    sent = json.loads(f.request.content)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == QUESTION["messages"]
    assert f.request.headers["content-length"] == str(len(f.request.raw_content))
    assert st(f).spend.request_model == "gpt-4o" and st(f).spend.strip_usage
    assert [type(o) for o in st(f).stream.observers] == [StreamUsage, UsageStripper]


@pytest.mark.parametrize("body", [QUESTION, {**QUESTION, "stream": True,
                                             "stream_options": {"include_usage": True}}])
def test_a_request_that_needs_no_usage_asked_for_is_sent_unchanged(store, bus_events, body):
    addon = spend_addon(bus_events[0], store)
    f = ask(llm(), body)
    before = f.request.raw_content
    with taddons.context(addon):
        addon.request(f)
    assert f.request.raw_content == before
    assert not st(f).spend.strip_usage
    assert [type(o) for o in st(f).stream.observers] == [StreamUsage]  # usage is still read


async def test_a_200_with_openai_usage_is_priced_and_kept_in_the_ledger(store, bus_events, settled):
    addon = spend_addon(bus_events[0], store)
    answer = chat_body("gpt-4o-2024-08-06", chat_usage(1200, 300, cached=1024))
    f = ask(llm())
    with taddons.context(addon):
        addon.request(f)
        st(f).tries.upstream = "openai-up"
        f.response = upstream_answer(200, json.dumps(answer).encode())
        addon.response(f)
        addon.error(f)  # a later hook must not price it twice
    priced = st(f).spend.priced
    want = genai_prices.extract_usage(answer, provider_id="openai", api_flavor="chat")
    assert priced.status == "priced"
    assert priced.cost == to_micros(want.calc_price().total_price) > 0
    await settled()
    (row,) = ledger(store)
    assert (row["route"], row["upstream"], row["status"], row["path"]) == (
        "llm", "openai-up", "priced", CHAT)
    assert row["cost_micros"] == priced.cost and row["model"] == priced.model


@pytest.mark.parametrize("failure", ["bridge error", "upstream 500"])
async def test_an_answer_that_failed_is_free_and_gives_its_reservation_back(
        store, bus_events, settled, failure):
    bus, _ = bus_events
    cfg = llm()
    budgets = Budgets(store, ManualClock().wall)
    spend, guard = spending(bus, budgets), guarding(bus, budgets)
    budget = cfg.route("llm").budget
    f = ask(cfg)
    with taddons.context(spend, guard):
        spend.request(f)
        await guard.request(f)
        assert budgets.committed("route:llm", budget) > 0
        if failure == "bridge error":
            apply_reply(f, error_reply("upstream_unreachable", "no answer"))
        else:
            f.response = upstream_answer(500, b'{"error": {"message": "oops"}}')
        spend.response(f)
    assert st(f).spend.priced.status == "free"
    assert st(f).spend.priced.cost == 0
    await settled()
    assert budgets.committed("route:llm", budget) == 0
    assert ledger(store) == []


async def test_a_cache_hit_costs_nothing_and_the_ledger_counts_what_it_saved(store, bus_events, settled):
    addon = spend_addon(bus_events[0], store)
    answer = json.dumps(chat_body("gpt-4o-2024-08-06", chat_usage(1200, 300))).encode()
    f = ask(llm())
    s = st(f)
    s.cache.status, s.cache.served_body = "hit", answer  # as CacheAddon serves a hit
    f.response = upstream_answer(200, answer)
    with taddons.context(addon):
        addon.response(f)
    assert (s.spend.priced.status, s.spend.priced.cost) == ("saved", 0)
    await settled()
    (row,) = ledger(store)
    assert row["cost_micros"] == 0 and row["saved_micros"] > 0


async def test_a_settled_cost_past_the_alert_threshold_is_announced_once(store, bus_events, settled):
    bus, events = bus_events
    cfg = llm(limit="0.01", alert="10%")
    budgets = Budgets(store, ManualClock().wall)
    spend, guard = spending(bus, budgets), guarding(bus, budgets)
    answer = json.dumps(chat_body("gpt-4o-2024-08-06", chat_usage(1200, 300))).encode()
    with taddons.context(spend, guard):
        for _ in (1, 2):
            f = ask(cfg)
            spend.request(f)
            await guard.request(f)
            assert f.response is None
            f.response = upstream_answer(200, answer)
            spend.response(f)
            await settled()
    assert len(ledger(store)) == 2
    alerts = [e for e in events if isinstance(e, BudgetEvent)]
    assert [(e.scope, e.what, e.limit_usd) for e in alerts] == [("route:llm", "alert", "0.010000")]


def streamed(flow, raw: bytes, forwarder: Forwarder) -> bytes:
    """What the client gets of the upstream's stream `raw`: respond() hands it to the
    forwarder, whose pieces pass the declared observers as Forwarder._pipe passes them."""
    up = UpstreamResponse(200, [("content-type", "text/event-stream")], None, raw=None)
    respond(flow, st(flow), up, forwarder, Handoff(up, 60.0))
    handoff = st(flow).stream.handoff
    out = b"".join(pass_piece(handoff.observers, raw[i:i + 40]) for i in range(0, len(raw), 40))
    out += pass_end(handoff.observers)
    handoff.complete()
    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    return out


@pytest.mark.parametrize("asks", ["client", "bridge"])
async def test_a_cached_stream_hit_counts_what_the_call_would_have_cost(
        tmp_path, store, bus_events, settled, asks):
    cfg = config(CACHED_LLM)
    clock = ManualClock()
    stores = ResponseStores(tmp_path / "home")
    keep = KeepAddon(CacheWriter(stores, "default"), InFlight(), clock)
    forwarder = Forwarder()
    await forwarder.start()  # streams are handed to it (no client collects them here)
    cache = CacheAddon(forwarder, stores, ReplayMode(), keep, clock)
    spend = spend_addon(bus_events[0], store)
    body = {**QUESTION, "stream": True}
    if asks == "client":
        body["stream_options"] = {"include_usage": True}
    raw = chat_stream("gpt-4o-2024-08-06", chat_usage(1200, 300))
    with taddons.context(cache, spend, keep):
        first = ask(cfg, body)
        await cache.request(first)
        spend.request(first)
        streamed(first, raw, forwarder)
        spend.response(first)
        keep.response(first)
        second = ask(cfg, body)
        await cache.request(second)
        spend.response(second)
    await settled()
    await forwarder.stop()
    stores.close()
    paid = st(first).spend.priced
    assert paid.status == "priced" and paid.cost > 0
    assert st(second).cache.status == "hit" and st(second).spend.priced.status == "saved"
    # both rows carry the ManualClock's one time: their order in the ledger is not defined
    assert sorted(r["saved_micros"] for r in ledger(store)) == [0, paid.cost]


# --- BudgetAddon -----------------------------------------------------------------------------


async def test_a_request_within_its_budget_holds_its_worst_case(store, bus_events):
    cfg = llm()
    budgets = Budgets(store, ManualClock().wall)
    guard = guarding(bus_events[0], budgets)
    f = ask(cfg)
    with taddons.context(guard):
        await guard.request(f)
    want = worst_case(cfg.route("llm").spend, "POST", f.request.raw_content)
    assert f.response is None
    assert st(f).spend.reservation.amount == want > 0
    assert budgets.committed("route:llm", cfg.route("llm").budget) == want
    assert bus_events[1] == []


async def test_a_request_over_a_blocking_budget_is_refused_402_and_announced(store, bus_events):
    bus, events = bus_events
    cfg = llm(limit="0.000001")
    budgets = Budgets(store, ManualClock().wall)
    guard = guarding(bus, budgets)
    f = ask(cfg)
    with taddons.context(guard):
        await guard.request(f)
    assert f.response.status_code == 402
    assert error_of(f) == "budget_exceeded"
    err = json.loads(f.response.content)["error"]
    assert (err["budget"], err["limit_usd"]) == ("route:llm", "0.000001")
    (event,) = events
    assert isinstance(event, BudgetEvent)
    assert (event.scope, event.what, event.action) == ("route:llm", "exceeded", "block")
    assert st(f).spend.reservation is None
    assert budgets.committed("route:llm", cfg.route("llm").budget) == 0


async def test_a_warn_budget_lets_the_request_go_and_announces_it(store, bus_events):
    bus, events = bus_events
    guard = guarding(bus, Budgets(store, ManualClock().wall))
    f = ask(llm(limit="0.000001", action="warn"))
    with taddons.context(guard):
        await guard.request(f)
    assert f.response is None and st(f).spend.reservation.amount > 0
    (event,) = events
    assert (event.what, event.action) == ("exceeded", "warn")


async def test_a_busy_store_refuses_the_request_rather_than_pass_an_unchecked_budget(
        store, bus_events):
    guard = guarding(bus_events[0], Budgets(store, ManualClock().wall))
    f = ask(llm())
    locker = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process is mid-write
    try:
        with taddons.context(guard):
            await guard.request(f)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert f.response.status_code == 402
    assert error_of(f) == "budget_exceeded"
    assert st(f).spend.reservation is None


async def test_a_route_without_spend_reserves_nothing_even_under_a_global_budget(
        store, bus_events):
    cfg = config("""\
        version: 2
        budget: {limit_usd: 0.000001, period: day}
        routes:
          - name: api
            listen: 127.0.0.1:8081
            upstreams: [http://127.0.0.1:9]
        """)
    guard = guarding(bus_events[0], Budgets(store, ManualClock().wall))
    f = arrive(cfg, "api", method="POST", body=QUESTION)
    with taddons.context(guard):
        await guard.request(f)
    assert f.response is None and st(f).spend.reservation is None
