"""Spend in a user's first hour (issue 22): a budget added to a route that already spent,
a refusal that says why, a streamed cache hit's savings, the model as the response names
it, and recipes that price streams. A real bridge between the official SDKs (or httpx) and
local upstreams; `bridge spend` through the installed entry point."""

from __future__ import annotations

import json
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest

from bridge_cli.config.loader import load_config
from bridge_cli.config.model import Budget, Spend
from bridge_cli.engine.budget import Budgets
from bridge_cli.engine.money import usd
from bridge_cli.engine.pricing import price_response, to_micros, worst_case
from bridge_cli.store import Ledger
from tests.conftest import (
    FakeClock,
    cli_env,
    config_yaml,
    free_port,
    json_answer,
    openai_sdk,
    wait_for,
)
from tests.test_spend import chat_body, chat_usage, claude_body, claude_stream, claude_usage
from tests.test_spend_e2e import (
    QUESTION,
    claude,
    ledger_rows,
    nth_flow,
    openai_like,
    route,
    settled,
    sse_response,
)

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / ".venv" / "bin" / "bridge"
CHAT = "/v1/chat/completions"


def bridge_spend(home: Path, *args: str) -> subprocess.CompletedProcess:
    """`bridge spend ARGS` through the installed entry point, on BRIDGE_HOME `home`."""
    return subprocess.run([str(BRIDGE), "spend", *args], env=cli_env(home), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def spend_json(home: Path, *args: str) -> dict:
    r = bridge_spend(home, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def budget_row(home: Path) -> dict:
    (row,) = spend_json(home)["budgets"]
    return row


# --- 1. a budget added later counts what the period already recorded ------------------------


def test_a_budget_added_to_a_route_counts_what_it_already_spent_today(start_bridge, upstream,
                                                                       client):
    upstream.on(CHAT, json_answer(chat_body("gpt-4o-2024-08-06", chat_usage(1000, 100))))
    plain = route("openai", upstream.url, "{provider: openai}")
    b = start_bridge(config_yaml(plain))
    for _ in range(3):
        assert client.post(b.url("openai") + CHAT, json={"model": "gpt-4o",
                                                         "messages": QUESTION}).status_code == 200
    spent = Decimal(settled(b, 3)["total_usd"])
    assert spent > 0
    # A budget with room for this request's worst case, but not on top of what was spent.
    body = json.dumps({"model": "gpt-4o", "max_tokens": 500, "messages": QUESTION}).encode()
    worst = worst_case(Spend(provider="openai"), "POST", body)
    limit = usd(worst + to_micros(spent) // 2)
    b.config_path.write_text(config_yaml(route("openai", upstream.url, "{provider: openai}",
                                               f"budget: {{limit_usd: {limit}, period: day}}")))
    b.reload()

    row = budget_row(b.home)  # before any request on the budget: the day's spend shows
    assert Decimal(row["spent_usd"]) == spent and row["budget"] == "route:openai"

    r = client.post(b.url("openai") + CHAT, content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert Decimal(err["committed_usd"]) == spent and err["limit_usd"] == limit
    assert len(upstream.calls) == 3  # the provider never saw it
    assert Decimal(budget_row(b.home)["spent_usd"]) == spent  # counted once, not again


def test_a_route_budget_never_counts_a_call_twice_across_reloads(start_bridge, upstream, client):
    upstream.on(CHAT, json_answer(chat_body("gpt-4o-2024-08-06", chat_usage(1000, 100))))
    budgeted = route("openai", upstream.url, "{provider: openai}",
                     "budget: {limit_usd: 5, period: day}")
    b = start_bridge(config_yaml(budgeted))
    client.post(b.url("openai") + CHAT, json={"model": "gpt-4o", "messages": QUESTION})
    spent = Decimal(settled(b, 1)["total_usd"])
    b.stop()
    again = start_bridge(config_yaml(budgeted), name="again.yaml")  # a new process's view
    client.post(again.url("openai") + CHAT, json={"model": "gpt-4o", "messages": QUESTION})
    settled(again, 2)
    wait_for(lambda: Decimal(budget_row(again.home)["spent_usd"]) == 2 * spent,
             what="two calls counted once each")


# --- 2. a refusal names the reservation and the setting that lowers it ------------------------


def test_a_refusal_names_the_reservation_that_did_not_fit_and_max_tokens(start_bridge,
                                                                           upstream, client):
    upstream.on(CHAT, json_answer(chat_body("gpt-4o-2024-08-06", chat_usage(1000, 100))))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}",
                                       "budget: {limit_usd: 0.02, period: day}")))
    body = json.dumps({"model": "gpt-4o", "messages": QUESTION}).encode()  # no max_tokens
    worst = worst_case(Spend(provider="openai"), "POST", body)
    assert worst > 20_000  # 4096 output tokens of gpt-4o don't fit in $0.02

    r = client.post(b.url("openai") + CHAT, content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 402 and upstream.calls == []
    err = r.json()["error"]
    assert err["reserved_usd"] == usd(worst)
    assert f"${usd(worst)}" in err["message"]
    assert "4096 output tokens" in err["message"]
    assert "max_tokens" in err["message"] and "spend.default_max_tokens" in err["message"]

    assert budget_row(b.home)["refused_usd"] == usd(worst)
    text = bridge_spend(b.home)
    assert text.returncode == 0, text.stderr
    line = " ".join(text.stdout.split())
    assert f"${usd(worst)}" in line and "spend.default_max_tokens" in line and "max_tokens" in line

    small = client.post(b.url("openai") + CHAT,  # the fix the message names works
                        json={"model": "gpt-4o", "max_tokens": 200, "messages": QUESTION})
    assert small.status_code == 200


# --- 3. a streamed cache hit counts what it saved ---------------------------------------------


def test_a_streamed_cache_hit_with_inject_usage_counts_its_savings_by_model(start_bridge,
                                                                            upstream):
    upstream.on(CHAT, openai_like("gpt-4o-mini-2024-07-18", chat_usage(5200, 410)))
    b = start_bridge(config_yaml(route("openai", upstream.url,
                                       "{provider: openai, inject_usage: true}",
                                       "cache: {ttl: 10m, methods: [POST]}")))
    client = openai_sdk(b, "openai")
    streams = []
    for _ in range(2):
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION,
                                                     stream=True))
        streams.append(chunks)
    assert len(upstream.calls) == 1  # the second was a hit
    for chunks in streams:  # neither client asked for usage: neither gets the usage chunk
        assert chunks and all(c.usage is None and c.choices for c in chunks)
    assert [c.model_dump() for c in streams[0]] == [c.model_dump() for c in streams[1]]
    report = settled(b, 2, by="model")
    (group,) = report["groups"]
    assert group["model"] == "gpt-4o-mini-2024-07-18" and group["calls"] == 2
    assert Decimal(group["saved_usd"]) == Decimal(group["cost_usd"]) > 0


# --- 4. the model as the response names it --------------------------------------------------


def test_a_call_is_reported_as_the_model_the_response_names_and_priced_by_its_match():
    answer = claude_body("claude-3-5-haiku-20241022", claude_usage(1800, 420))
    priced = price_response("anthropic", answer, path="/v1/messages")
    want = genai_prices.extract_usage(answer, provider_id="anthropic")
    assert want.model.id != "claude-3-5-haiku-20241022"  # genai-prices' id differs
    assert priced.model == "claude-3-5-haiku-20241022"
    assert priced.cost == to_micros(want.calc_price().total_price) > 0


def test_a_response_without_a_model_is_reported_as_the_request_named_it():
    answer = chat_body("x", chat_usage(1000, 200))
    del answer["model"]
    priced = price_response("openai", answer, path=CHAT, request_model="gpt-4o")
    assert (priced.status, priced.model) == ("priced", "gpt-4o")


# --- 5. recipes price streamed calls ----------------------------------------------------------


def _recipe(name: str, upstream_url: str) -> str:
    """A recipe, pointed at a local upstream on a free port (and a free control port)."""
    text = (ROOT / "recipes" / f"{name}.yaml").read_text()
    text = re.sub(r"url: https://api\.\w+\.com", f'url: "{upstream_url}"', text)
    text = re.sub(r"listen: 127\.0\.0\.1:\d+", f"listen: 127.0.0.1:{free_port()}", text)
    return text.replace("version: 2\n", "version: 2\ncontrol: {listen: 127.0.0.1:0}\n", 1)


def test_the_openai_recipe_turns_inject_usage_on():
    route_ = load_config(ROOT / "recipes" / "openai.yaml").route("openai")
    assert route_.spend.provider == "openai" and route_.spend.inject_usage is True


def test_the_openai_recipe_prices_a_stream_whose_client_did_not_ask_for_usage(start_bridge,
                                                                              upstream):
    upstream.on(CHAT, openai_like("gpt-4o-mini-2024-07-18", chat_usage(950, 120)))
    b = start_bridge(_recipe("openai", upstream.url))
    chunks = list(openai_sdk(b, "openai").chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, stream=True))
    assert all(c.usage is None for c in chunks)
    event = nth_flow(b, 1)
    assert event.spend_status == "priced" and Decimal(event.cost_usd) > 0


def test_the_anthropic_recipe_prices_a_stream_as_it_comes(start_bridge, upstream):
    usage = claude_usage(600, 230)
    upstream.on("/v1/messages", sse_response(claude_stream("claude-sonnet-4-20250514", usage)))
    b = start_bridge(_recipe("anthropic", upstream.url))
    with claude(b, "anthropic").messages.stream(model="claude-sonnet-4-20250514", max_tokens=300,
                                                messages=QUESTION) as s:
        s.get_final_message()
    event = nth_flow(b, 1)
    assert event.spend_status == "priced" and Decimal(event.cost_usd) > 0
    settled(b, 1)
    (row,) = ledger_rows(b.home)
    assert row["model"] == "claude-sonnet-4-20250514"


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_the_llm_recipes_still_validate(name, tmp_path):
    r = subprocess.run([str(BRIDGE), "validate", str(ROOT / "recipes" / f"{name}.yaml")],
                       env=cli_env(tmp_path / "home"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_budget_counts_only_the_calls_no_budget_of_its_scope_held(store):
    now = 1_790_000_000.0
    Ledger(store).append_many([
        # before the budget: counted by both
        {"ts": now - 7000, "id": "a1", "route": "a", "cost_micros": 100},
        # held by route a's budget (settled in a later hour than it was reserved in):
        # route a counted it already, the global budget did not
        {"ts": now - 3000, "id": "a2", "route": "a", "cost_micros": 50, "budgets": ["route:a"]},
        {"ts": now - 3000, "id": "b1", "route": "b", "cost_micros": 7},
        {"ts": now - 20000, "id": "old", "route": "a", "cost_micros": 1000},  # out of window
    ])
    budgets = Budgets(store, FakeClock(now))
    rolling = Budget(limit_usd=1_000_000, rolling=3 * 3600)
    rows = Ledger(store).rows
    for scope, want in (("route:a", 100), ("global", 157)):
        assert budgets.seed(scope, budgets.unseeded(scope, rolling, rows)) == want
        assert budgets.committed(scope, rolling) == budgets.spent(scope, rolling) == want
        assert budgets.seed(scope, budgets.unseeded(scope, rolling, rows)) == 0  # once
