"""Spend and budgets end to end: a real bridge between real clients (the official openai
and anthropic SDKs, httpx for Gemini, the `bridge` CLI as a subprocess) and local upstreams
that answer with realistic bodies and SSE streams.

Costs are checked against genai-prices' own calc_price for the same usage, computed here
from the complete response, to the micro-dollar; budgets are checked on what the upstream
received (`.calls`), so a refusal that let the request out anyway fails.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import subprocess
import sys
import threading
import time as _time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import anthropic
import httpx
import httpx2
import openai
import pytest
from aiohttp import web

import bridge_cli.proxy.forwarder as forwarder_mod
from bridge_cli.config.model import Spend
from bridge_cli.control.spend_report import ledger
from bridge_cli.engine.clock import ManualClock
from bridge_cli.engine.events import BudgetEvent, FlowEvent
from bridge_cli.engine.pricing import worst_case
from bridge_cli.store import DiskStore
from tests.conftest import config_yaml, free_env, json_answer, openai_sdk, route_yaml, wait_for
from tests.test_spend import (
    CASES,
    HALF_MICRO,
    PATHS,
    TEXT,
    Case,
    chat_body,
    chat_stream,
    chat_usage,
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


# --- helpers -------------------------------------------------------------------------------


def route(name: str, url: str, spend: str, extra: str = "") -> str:
    """A route to one upstream (`NAME-up`) with `spend:` (flow YAML) and `extra` YAML."""
    return route_yaml(name, (f"{name}-up", url), spend=spend, extra=extra)


def flows(b) -> list[FlowEvent]:
    return [e for e in b.events() if isinstance(e, FlowEvent)]


def budget_events(b, what: str | None = None) -> list[BudgetEvent]:
    return [e for e in b.events() if isinstance(e, BudgetEvent) and what in (None, e.what)]


def nth_flow(b, n: int) -> FlowEvent:
    """The n-th finished request (1-based), once it is published (streams: at their end)."""
    return wait_for(lambda: len(flows(b)) >= n and flows(b)[n - 1], what=f"flow #{n}")


def settled(b, calls: int, **kw) -> dict:
    """The spend report once `calls` calls are in the ledger (settled off the loop)."""
    report, ctl = {}, b.control()

    def done():
        report.update(ctl.spend(kw.get("since"), kw.get("by", "route")))
        return report["calls"] >= calls

    wait_for(done, what=f"{calls} settled call(s)")
    return report


def ledger_rows(home) -> list[dict]:
    store = DiskStore(home / "store")
    try:
        return sorted(ledger(store, "2000-01-01"), key=lambda r: r["ts"])
    finally:
        store.close()


def micro_equal(value: str, expected: Decimal) -> bool:
    return abs(Decimal(value) - expected) <= HALF_MICRO


def sse_response(data: bytes, piece: int = 37):
    """An aiohttp handler streaming `data` as text/event-stream in small pieces."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)
        for i in range(0, len(data), piece):
            await resp.write(data[i:i + piece])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    return handler


def openai_like(model: str, usage: dict):
    """Answers like OpenAI's chat completions: streamed when asked, with the usage chunk
    only when the request says stream_options.include_usage."""

    async def handler(request: web.Request) -> web.StreamResponse:
        doc = json.loads(await request.read())
        if not doc.get("stream"):
            return web.json_response(chat_body(model, usage))
        wants = bool((doc.get("stream_options") or {}).get("include_usage"))
        return await sse_response(chat_stream(model, usage if wants else None))(request)

    return handler


def claude(b, name: str, retries: int = 0) -> anthropic.Anthropic:
    # this anthropic release insists on a client from httpx2, its fork of httpx
    return anthropic.Anthropic(base_url=b.url(name), api_key="sk-ant-test", max_retries=retries,
                               http_client=httpx2.Client(trust_env=False))


def bridge_cli(*args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bridge_cli", *args], env=free_env(),
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run_cli(*args: str) -> tuple[int, str, str]:
    p = bridge_cli(*args)
    out, err = p.communicate(timeout=60)
    return p.returncode, out, err


# --- accuracy: bridge's cost == genai-prices' calc_price, through the official SDKs -------------


def _ask(b, case: Case) -> None:
    """Make the call the way an app would, and check the client got the case's usage."""
    u = case.usage
    if case.api == "chat":
        client = openai_sdk(b, "openai")
        if case.stream:
            chunks = list(client.chat.completions.create(
                model=case.request_model, messages=QUESTION, stream=True,
                stream_options={"include_usage": True}))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
                "".join(TEXT)
            assert chunks[-1].usage.prompt_tokens == u["prompt_tokens"]
        else:
            r = client.chat.completions.create(model=case.request_model, messages=QUESTION)
            assert r.usage.completion_tokens == u["completion_tokens"]
    elif case.api == "responses":
        client = openai_sdk(b, "openai")
        if case.stream:
            events = list(client.responses.create(model=case.request_model,
                                                  input="What is the capital of France?",
                                                  stream=True))
            assert events[-1].type == "response.completed"
            assert events[-1].response.usage.output_tokens == u["output_tokens"]
        else:
            r = client.responses.create(model=case.request_model,
                                        input="What is the capital of France?")
            assert r.output_text == "".join(TEXT)
            assert r.usage.input_tokens_details.cached_tokens == \
                u["input_tokens_details"]["cached_tokens"]
    elif case.api == "messages":
        client = claude(b, "anthropic")
        kw = dict(model=case.request_model, max_tokens=2048, messages=QUESTION)
        if case.thinking:
            kw["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        if case.stream:
            with client.messages.stream(**kw) as s:
                final = s.get_final_message()
        else:
            final = client.messages.create(**kw)
        assert final.usage.output_tokens == u["output_tokens"]
        assert final.usage.cache_read_input_tokens == u["cache_read_input_tokens"]
        assert final.content[-1].text == "".join(TEXT)
    else:
        base = b.url("gemini") + f"/v1beta/models/{case.model}"
        body = {"contents": [{"role": "user", "parts": [{"text": "What is the capital?"}]}],
                "generationConfig": {"maxOutputTokens": 4096}}
        headers = {"x-goog-api-key": "AIza-test"}
        with httpx.Client(trust_env=False, timeout=10) as http:
            if case.stream:
                with http.stream("POST", base + ":streamGenerateContent?alt=sse", json=body,
                                 headers=headers) as r:
                    assert r.status_code == 200
                    data = [json.loads(line[5:]) for line in r.iter_lines()
                            if line.startswith("data:")]
                assert data[-1]["usageMetadata"] == u
            else:
                r = http.post(base + ":generateContent", json=body, headers=headers)
                assert r.status_code == 200 and r.json()["usageMetadata"] == u


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_recorded_cost_equals_genai_prices(case, start_bridge, upstream):
    path = PATHS[case.api].format(model=case.model)
    if case.stream and case.api == "gemini":
        path = path.replace(":generateContent", ":streamGenerateContent")
    upstream.on(path, sse_response(case.stream_bytes()) if case.stream
                else json_answer(case.body()))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}"),
                            route("anthropic", upstream.url, "{provider: anthropic}"),
                            route("gemini", upstream.url, "{provider: google}")))
    expected = case.expected()  # genai-prices on the complete response, independently

    _ask(b, case)

    event = nth_flow(b, 1)
    assert event.streamed is case.stream
    assert event.spend_status == "priced"
    assert micro_equal(event.cost_usd, expected), (event.cost_usd, expected)
    report = settled(b, 1, by="model")
    assert micro_equal(report["total_usd"], expected), (report["total_usd"], expected)
    (group,) = report["groups"]
    assert (group["calls"], group["unpriced"], group["estimated"]) == (1, 0, 0)
    assert micro_equal(group["cost_usd"], expected)
    (row,) = ledger_rows(b.home)
    assert row["snapshot"].startswith("genai-prices ") and row["status"] == "priced"
    assert len(upstream.calls) == 1


# --- streams without usage: never a silent zero ---------------------------------------------


def test_a_stream_without_usage_is_recorded_unpriced_with_the_reason(start_bridge, upstream):
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-mini-2024-07-18", chat_usage(900, 80)))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}")))
    chunks = list(openai_sdk(b, "openai").chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, stream=True))
    assert all(c.usage is None for c in chunks)
    event = nth_flow(b, 1)
    assert event.spend_status == "unpriced"
    report = settled(b, 1)
    assert report["groups"][0]["unpriced"] == 1
    (row,) = ledger_rows(b.home)
    assert row["status"] == "unpriced"
    assert "usage" in row["reason"] and "inject_usage" in row["reason"]


def test_a_stream_without_usage_under_a_budget_settles_at_its_reservation(start_bridge, upstream):
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-mini-2024-07-18", chat_usage(900, 80)))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}",
                                  "budget: {limit_usd: 5, period: day}")))
    chunks = list(openai_sdk(b, "openai").chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, stream=True, max_tokens=300))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXT)
    sent = upstream.calls[0].body
    reservation = worst_case(Spend(provider="openai"), "POST", sent)
    assert reservation > 0
    event = nth_flow(b, 1)
    assert event.spend_status == "estimated"
    assert Decimal(event.cost_usd) == Decimal(reservation) / 1_000_000
    report = settled(b, 1)
    assert report["groups"][0]["estimated"] == 1
    (budget,) = report["budgets"]
    assert Decimal(budget["spent_usd"]) == Decimal(reservation) / 1_000_000
    assert Decimal(budget["reserved_usd"]) == 0


def test_inject_usage_prices_the_stream_and_hides_the_usage_chunk(start_bridge, upstream):
    usage = chat_usage(3000, 400, cached=2048)
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-mini-2024-07-18", usage))
    b = start_bridge(config_yaml(route("openai", upstream.url,
                                  "{provider: openai, inject_usage: true}")))
    expected = Case("x", "chat", True, "gpt-4o-mini-2024-07-18", usage).expected()
    client = openai_sdk(b, "openai")

    # a client that didn't ask: priced, and it never sees the usage chunk
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION,
                                                 stream=True))
    sent = json.loads(upstream.calls[0].body)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == QUESTION and sent["model"] == "gpt-4o-mini"
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no `choices: []` usage chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(TEXT)
    first = nth_flow(b, 1)
    assert first.spend_status == "priced" and micro_equal(first.cost_usd, expected)

    # with raw bytes too: nothing of the usage chunk, the stream still ends with [DONE]
    with httpx.Client(trust_env=False, timeout=10) as http:
        raw = http.post(b.url("openai") + "/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": QUESTION, "stream": True})
    assert b'"usage":{' not in raw.content and raw.content.endswith(b"data: [DONE]\n\n")
    assert micro_equal(nth_flow(b, 2).cost_usd, expected)

    # a client that asked for it still gets it
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 3000
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 2048
    assert micro_equal(nth_flow(b, 3).cost_usd, expected)
    report = settled(b, 3)
    assert Decimal(report["total_usd"]) == sum(Decimal(nth_flow(b, i).cost_usd) for i in (1, 2, 3))


def test_a_forwarded_stream_declares_no_phantom_body(start_bridge, upstream, monkeypatch):
    seen = []
    handle = forwarder_mod.Forwarder._handle

    async def spy(self, request):
        seen.append(request.content_length)
        return await handle(self, request)

    monkeypatch.setattr(forwarder_mod.Forwarder, "_handle", spy)
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-mini-2024-07-18", chat_usage(9, 9)))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}")))
    list(openai_sdk(b, "openai").chat.completions.create(model="gpt-4o-mini", messages=QUESTION,
                                                  stream=True))
    nth_flow(b, 1)
    assert seen and seen[0] in (None, 0)


def test_the_model_falls_back_to_the_request(start_bridge, upstream):
    body = chat_body("gpt-4o-mini-2024-07-18", chat_usage(1000, 200))
    del body["model"]
    upstream.on("/v1/chat/completions", json_answer(body))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}")))
    openai_sdk(b, "openai").chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    expected = Case("x", "chat", False, "gpt-4o-mini-2024-07-18",
                    chat_usage(1000, 200)).expected()
    event = nth_flow(b, 1)
    assert event.spend_status == "priced" and micro_equal(event.cost_usd, expected)


# --- flat prices and `pricing:` overrides ------------------------------------------------------


def test_flat_prices_per_request_and_per_method(start_bridge, upstream, client):
    b = start_bridge(config_yaml(route("flat", upstream.url, "{per_request_usd: 0.002}"),
                            route("methods", upstream.url,
                                  "{per_request_usd: {GET: 0, POST: 0.01}}")))
    for _ in range(3):
        assert client.get(b.url("flat") + "/v1/search?q=x").status_code == 200
    assert client.get(b.url("methods") + "/v1/things").status_code == 200
    assert client.post(b.url("methods") + "/v1/things", json={"a": 1}).status_code == 200
    assert client.delete(b.url("methods") + "/v1/things/1").status_code == 200
    costs = [(e.route, e.method, e.spend_status, e.cost_usd)
             for e in (nth_flow(b, i) for i in range(1, 7))]
    assert costs == [("flat", "GET", "flat", "0.002000")] * 3 + [
        ("methods", "GET", "flat", "0.000000"), ("methods", "POST", "flat", "0.010000"),
        ("methods", "DELETE", "flat", "0.000000")]
    report = settled(b, 6)
    assert report["total_usd"] == "0.016000"
    assert {g["route"]: g["cost_usd"] for g in report["groups"]} == {
        "flat": "0.006000", "methods": "0.010000"}


PRICING = """\
pricing:
  - provider: openai
    id: acme-llm-7b
    prices: {input_mtok: 2, output_mtok: 8, cache_read_mtok: 0.5}
  - provider: openai
    id: acme-ft
    match: {starts_with: "ft:gpt-4o-mini-2024-07-18:acme"}
    prices: {input_mtok: 0.3, output_mtok: 1.2}
"""


def test_pricing_override_prices_a_fine_tuned_model(start_bridge, upstream):
    upstream.on("/v1/chat/completions", json_answer(chat_body(
        "ft:gpt-4o-mini-2024-07-18:acme::BX1y2z3", chat_usage(100000, 10000))))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}"), top=PRICING))
    openai_sdk(b, "openai").chat.completions.create(model="ft:gpt-4o-mini-2024-07-18:acme::BX1y2z3",
                                             messages=QUESTION)
    event = nth_flow(b, 1)
    assert (event.spend_status, event.cost_usd) == ("priced", "0.042000")  # 0.03 + 0.012
    settled(b, 1)
    (row,) = ledger_rows(b.home)
    assert row["snapshot"] == "config pricing"
    assert row["model"] == "ft:gpt-4o-mini-2024-07-18:acme::BX1y2z3"


def test_pricing_override_prices_a_private_model(start_bridge, upstream):
    upstream.on("/v1/chat/completions", json_answer(chat_body(
        "acme-llm-7b", chat_usage(10000, 2000, cached=4000))))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}"), top=PRICING))
    openai_sdk(b, "openai").chat.completions.create(model="acme-llm-7b", messages=QUESTION)
    event = nth_flow(b, 1)
    # 6000 uncached at $2, 4000 cached at $0.5, 2000 out at $8 per million
    assert (event.spend_status, event.cost_usd) == ("priced", "0.030000")


# --- the cache: free, and counted as savings ----------------------------------------------------


def test_cache_hits_cost_nothing_and_count_as_savings(start_bridge, upstream):
    usage = chat_usage(5200, 410, cached=4096)
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-mini-2024-07-18", usage))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}",
                                  "cache: {ttl: 10m, methods: [POST]}")))
    expected = Case("x", "chat", False, "gpt-4o-mini-2024-07-18", usage).expected()
    client = openai_sdk(b, "openai")
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                             messages=QUESTION)
    assert first.headers["x-bridge-cache"] == "miss"
    settled(b, 1)
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                              messages=QUESTION)
    assert second.headers["x-bridge-cache"] == "hit"
    assert second.parse().usage.prompt_tokens == 5200
    assert len(upstream.calls) == 1
    paid, hit = nth_flow(b, 1), nth_flow(b, 2)
    assert paid.spend_status == "priced" and micro_equal(paid.cost_usd, expected)
    assert (hit.cache, hit.spend_status, hit.cost_usd) == ("hit", "saved", "0.000000")
    report = settled(b, 2)
    assert report["total_usd"] == paid.cost_usd
    assert report["saved_usd"] == paid.cost_usd
    assert report["groups"][0]["saved_usd"] == paid.cost_usd


def test_cached_streams_count_as_savings_too(start_bridge, upstream):
    usage = chat_usage(5200, 410, cached=4096)
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-mini-2024-07-18", usage))
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}",
                                  "cache: {ttl: 10m, methods: [POST]}")))
    client = openai_sdk(b, "openai")
    for i in (1, 2):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True,
                                            stream_options={"include_usage": True}))
        nth_flow(b, i)
        settled(b, i)
    assert len(upstream.calls) == 1
    paid, hit = nth_flow(b, 1), nth_flow(b, 2)
    assert hit.cache == "hit" and Decimal(paid.cost_usd) > 0
    assert settled(b, 2)["saved_usd"] == paid.cost_usd


# --- budgets ------------------------------------------------------------------------------------


def _next_midnight() -> dt.datetime:
    now = dt.datetime.now().astimezone()
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1))


def test_block_refuses_with_402_before_the_request_leaves(start_bridge, upstream):
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-mini", chat_usage(10, 2)))
    upstream.on("/v1/messages", json_answer({"type": "message"}))
    b = start_bridge(config_yaml(route("llm", upstream.url, "{per_request_usd: 0.02}",
                                  "budget: {limit_usd: 0.05, period: day, action: block}")))
    with httpx.Client(trust_env=False, timeout=10) as http:
        for _ in range(2):
            assert http.post(b.url("llm") + "/v1/chat/completions",
                             json={"model": "gpt-4o-mini", "messages": QUESTION}).status_code == 200
        settled(b, 2)
        refused = http.post(b.url("llm") + "/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "messages": QUESTION})
    assert len(upstream.calls) == 2  # the third never left
    assert refused.status_code == 402
    assert refused.headers["x-bridge-error"] == "budget_exceeded"
    err = refused.json()["error"]
    assert err["type"] == "budget_exceeded"
    assert err["budget"] == "route:llm"
    assert (err["committed_usd"], err["limit_usd"]) == ("0.040000", "0.050000")
    assert dt.datetime.fromisoformat(err["resets_at"]) == _next_midnight()
    msg = err["message"]
    assert "route llm" in msg and "$0.0400" in msg and "$0.0500" in msg and "$0.0200" in msg
    assert "resets at" in msg

    # the official SDKs raise on it and do not retry it, even when allowed to retry
    before = len(flows(b))
    with pytest.raises(openai.APIStatusError) as caught:
        openai_sdk(b, "llm", retries=3).chat.completions.create(model="gpt-4o-mini",
                                                                messages=QUESTION)
    assert caught.value.status_code == 402
    assert caught.value.body["type"] == "budget_exceeded"
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude(b, "llm", retries=3).messages.create(model="claude-sonnet-4-20250514",
                                                    max_tokens=10, messages=QUESTION)
    assert caught.value.status_code == 402
    # each SDK raised after its last try: the flow of a retry would be published already
    wait_for(lambda: len(flows(b)) >= before + 2, what="the two refusals' flows")
    assert [e.status for e in flows(b)[before:]] == [402, 402]  # one try each
    assert len(upstream.calls) == 2
    refusals = budget_events(b, "exceeded")
    assert len(refusals) == 3 and {e.action for e in refusals} == {"block"}
    assert refusals[0].scope == "route:llm" and refusals[0].limit_usd == "0.050000"


def test_warn_passes_and_emits_a_budget_event(start_bridge, upstream, client):
    b = start_bridge(config_yaml(route("llm", upstream.url, "{per_request_usd: 0.02}",
                                  "budget: {limit_usd: 0.05, action: warn, alert_at: 100%}")))
    for i in range(3):
        assert client.post(b.url("llm") + "/v1/x", json={}).status_code == 200
        settled(b, i + 1)
    assert len(upstream.calls) == 3
    (event,) = budget_events(b, "exceeded")
    assert (event.scope, event.action, event.limit_usd) == ("route:llm", "warn", "0.050000")
    assert event.committed_usd == "0.060000"
    report = settled(b, 3)
    assert report["total_usd"] == "0.060000"
    assert report["budgets"][0]["spent_usd"] == "0.060000"


def test_alert_at_emits_one_budget_alert_per_period(start_bridge, upstream, client):
    b = start_bridge(config_yaml(route("llm", upstream.url, "{per_request_usd: 0.25}",
                                  "budget: {limit_usd: 1.00, alert_at: 50%, action: warn}")))
    client.post(b.url("llm") + "/v1/x", json={})
    settled(b, 1)
    # the alert check follows the ledger write and shows nothing when it finds nothing:
    # give a wrong alert a moment to arrive
    _time.sleep(0.1)
    assert budget_events(b) == []  # 25 %: not yet
    client.post(b.url("llm") + "/v1/x", json={})
    settled(b, 2)
    wait_for(lambda: budget_events(b, "alert"), what="the alert")
    for i in (3, 4):
        client.post(b.url("llm") + "/v1/x", json={})
        settled(b, i)
    _time.sleep(0.1)  # as above: a second alert, wrongly sent, would be here by now
    alerts = budget_events(b)
    assert len(alerts) == 1 and alerts[0].kind == "budget_alert"
    assert (alerts[0].what, alerts[0].scope, alerts[0].committed_usd) == (
        "alert", "route:llm", "0.500000")


def test_concurrent_requests_never_pass_the_budget(start_bridge, upstream):
    """The reservation rule: room for N worst cases, M >> N requests at once, N go."""
    n, m = 4, 24
    body = json.dumps({"model": "gpt-4o", "max_tokens": 1000, "messages": QUESTION}).encode()
    worst = worst_case(Spend(provider="openai"), "POST", body)
    limit = n * worst + worst // 2
    gate = threading.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        while not gate.is_set():  # held until every refusal is in
            await asyncio.sleep(0.01)
        return web.json_response(chat_body("gpt-4o-2024-08-06", chat_usage(20, 5)))

    upstream.on("/v1/chat/completions", slow)
    b = start_bridge(config_yaml(route("openai", upstream.url, "{provider: openai}",
                                  f"budget: {{limit_usd: {limit / 1e6:.6f}, period: day}}")))
    url = b.url("openai") + "/v1/chat/completions"
    start = threading.Barrier(m)

    def call(http: httpx.Client) -> int:
        start.wait()
        r = http.post(url, content=body, headers={"content-type": "application/json"})
        return r.status_code

    with httpx.Client(trust_env=False, timeout=20, limits=httpx.Limits(max_connections=m)) as http:
        with ThreadPoolExecutor(m) as pool:
            futures = [pool.submit(call, http) for _ in range(m)]
            try:  # only refusals can finish while the upstream holds the calls it got
                wait_for(lambda: sum(f.done() for f in futures) >= m - n, timeout=5,
                         what="the refusals")
            except AssertionError:
                pass  # more than n got through: the asserts below say so
            finally:
                gate.set()
            statuses = [f.result(timeout=20) for f in futures]
    assert len(upstream.calls) == n
    assert sorted(statuses) == [200] * n + [402] * (m - n)
    report = settled(b, n)
    (budget,) = report["budgets"]
    assert budget["reserved_usd"] == "0.000000"  # every reservation settled
    assert Decimal(budget["spent_usd"]) == Decimal(report["total_usd"]) > 0


def test_a_failed_call_gives_its_reservation_back(start_bridge, upstream):
    """Room for one worst case: a call that fails (upstream 500, or no upstream at all)
    must release its hold, or the next one would be refused."""

    async def boom(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": {"message": "overloaded"}}, status=500)

    upstream.on("/v1/chat/completions", boom)
    body = json.dumps({"model": "gpt-4o", "max_tokens": 1000, "messages": QUESTION}).encode()
    worst = worst_case(Spend(provider="openai"), "POST", body)
    budget = f"budget: {{limit_usd: {(worst + worst // 2) / 1e6:.6f}, period: day}}"
    b = start_bridge(config_yaml(route("flaky", upstream.url, "{provider: openai}", budget),
                            route("dead", "http://127.0.0.1:9", "{provider: openai}", budget)))

    ctl = b.control()

    def reserved() -> dict:
        return {x["budget"]: (x["reserved_usd"], x["spent_usd"])
                for x in ctl.spend(None, "route")["budgets"]}

    with httpx.Client(trust_env=False, timeout=10) as http:
        for name, status in (("flaky", 500), ("dead", 502)):
            for _ in range(2):
                r = http.post(b.url(name) + "/v1/chat/completions", content=body,
                              headers={"content-type": "application/json"})
                assert r.status_code == status, r.text  # never 402
                wait_for(lambda n=name: reserved()[f"route:{n}"] == ("0.000000", "0.000000"),
                         what="the release")
    assert len(upstream.calls) == 2
    assert b.control().spend(None, "route")["calls"] == 0  # a failed call costs nothing


def test_a_global_budget_applies_across_routes(start_bridge, upstream, client):
    b = start_bridge(config_yaml(route("a", upstream.url, "{per_request_usd: 0.02}"),
                            route("b", upstream.url, "{per_request_usd: 0.02}"),
                            top="budget: {limit_usd: 0.05, period: day}\n"))
    assert client.get(b.url("a") + "/x").status_code == 200
    assert client.get(b.url("a") + "/x").status_code == 200
    settled(b, 2)
    refused = client.get(b.url("b") + "/x")
    assert refused.status_code == 402 and len(upstream.calls) == 2
    err = refused.json()["error"]
    assert err["budget"] == "global" and "global budget" in err["message"]
    report = settled(b, 2)
    assert [(x["budget"], x["spent_usd"]) for x in report["budgets"]] == [("global", "0.040000")]


def test_spend_and_budgets_survive_a_restart(start_bridge, upstream, client):
    cfg = config_yaml(route("llm", upstream.url, "{per_request_usd: 0.02}",
                       "budget: {limit_usd: 0.05, period: day}"))
    first = start_bridge(cfg)
    for _ in range(2):
        assert client.get(first.url("llm") + "/x").status_code == 200
    settled(first, 2)
    assert client.get(first.url("llm") + "/x").status_code == 402
    first.stop()
    second = start_bridge(cfg)  # a new process in all but name: same config, same home
    assert second.home == first.home
    refused = client.get(second.url("llm") + "/x")
    assert refused.status_code == 402 and refused.json()["error"]["committed_usd"] == "0.040000"
    assert len(upstream.calls) == 2
    report = second.control().spend(None, "route")
    assert report["total_usd"] == "0.040000" and report["calls"] == 2


# --- `bridge spend` and `bridge spend reset` -------------------------------------------------


def test_bridge_spend_reports_by_route_upstream_model_and_day(start_bridge, upstream,
                                                              client):
    upstream.on("/v1/chat/completions", openai_like("gpt-4o-2024-08-06", chat_usage(1000, 100)))
    upstream.on("/v1/mini", openai_like("gpt-4o-mini-2024-07-18", chat_usage(2000, 300, 1024)))
    cfg = config_yaml(route("openai", upstream.url, "{provider: openai}",
                       "budget: {limit_usd: 1, period: day, action: warn}"),
                 route("search", upstream.url, "{per_request_usd: 0.002}"))
    old_day = _time.strftime("%Y-%m-%d", _time.localtime(_time.time() - 10 * 86400))
    # a session ten days ago: its policy clock (ledger days, budget periods) runs then
    old = start_bridge(cfg, name="old.yaml", clock=ManualClock(_time.time() - 10 * 86400))
    openai_sdk(old, "openai").chat.completions.create(model="gpt-4o", messages=QUESTION)
    settled_rows = wait_for(lambda: len(ledger_rows(old.home)) == 1, what="old call")
    assert settled_rows
    old_cost = nth_flow(old, 1).cost_usd
    old.stop()
    today = start_bridge(cfg)
    client.post(today.url("openai") + "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": QUESTION})
    client.post(today.url("openai") + "/v1/mini",
                json={"model": "gpt-4o-mini", "messages": QUESTION})
    for _ in range(3):
        client.get(today.url("search") + "/q")
    costs = [nth_flow(today, i).cost_usd for i in range(1, 6)]
    settled(today, 6, since="30d")
    today.stop()
    assert not (today.home / "control.json").exists()  # no bridge running now

    procs = {
        "default": bridge_cli("spend", "--json"),
        "30d-day": bridge_cli("spend", "--since", "30d", "--by", "day", "--json"),
        "7d-day": bridge_cli("spend", "--since", "7d", "--by", "day", "--json"),
        "date-model": bridge_cli("spend", "--since", old_day, "--by", "model", "--json"),
        "upstream": bridge_cli("spend", "--by", "upstream", "--json"),
        "csv": bridge_cli("spend", "--since", "30d", "--by", "route", "--csv"),
        "text": bridge_cli("spend", "-c", str(today.config_path)),
        "bad": bridge_cli("spend", "--since", "last tuesday"),
    }
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=60)
        out[k] = (p.returncode, stdout, stderr)
    for k in procs:
        if k != "bad":
            assert out[k][0] == 0, (k, out[k][2])

    d = lambda s: Decimal(s)  # noqa: E731
    total_today = sum(d(c) for c in costs)
    default = json.loads(out["default"][1])
    assert default["calls"] == 5 and d(default["total_usd"]) == total_today
    assert {g["route"]: (g["calls"], d(g["cost_usd"])) for g in default["groups"]} == {
        "openai": (2, d(costs[0]) + d(costs[1])), "search": (3, Decimal("0.006"))}
    assert default["budgets"] is None  # no bridge and no -c: no budgets to show

    by_day = json.loads(out["30d-day"][1])
    today_day = _time.strftime("%Y-%m-%d")
    assert {g["day"]: (g["calls"], d(g["cost_usd"])) for g in by_day["groups"]} == {
        old_day: (1, d(old_cost)), today_day: (5, total_today)}
    assert [g["day"] for g in json.loads(out["7d-day"][1])["groups"]] == [today_day]

    by_model = json.loads(out["date-model"][1])
    models = {g["model"]: g for g in by_model["groups"]}
    # models as the responses name them; "-": the flat-priced route
    assert set(models) == {"gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "-"}
    assert models["gpt-4o-2024-08-06"]["calls"] == 2 and d(
        models["gpt-4o-2024-08-06"]["cost_usd"]) == d(old_cost) + d(costs[0])
    assert models["gpt-4o-mini-2024-07-18"]["tokens"] == 2300
    assert by_model["since"] == old_day and by_model["calls"] == 6

    by_upstream = json.loads(out["upstream"][1])
    assert {g["upstream"] for g in by_upstream["groups"]} == {"openai-up", "search-up"}

    rows = list(csv.DictReader(io.StringIO(out["csv"][1])))
    assert [r["route"] for r in rows] == ["openai", "search"]  # dearest first
    assert rows[0]["calls"] == "3" and d(rows[0]["cost_usd"]) == d(old_cost) + d(costs[0]) + d(
        costs[1])
    assert rows[1]["cost_usd"] == "0.006000" and rows[1]["saved_usd"] == "0.000000"

    text = out["text"][1]
    assert "openai" in text and "search" in text and "route:openai" in text and "warn" in text
    assert out["bad"][0] == 2 and "--since" in out["bad"][2]
    assert len(out["bad"][2].strip().splitlines()) == 1


def test_bridge_spend_reset_asks_then_forgets_a_route(start_bridge, upstream, client):
    b = start_bridge(config_yaml(route("llm", upstream.url, "{per_request_usd: 0.02}",
                                  "budget: {limit_usd: 0.03, period: day}"),
                            route("other", upstream.url, "{per_request_usd: 0.01}")))
    assert client.get(b.url("llm") + "/x").status_code == 200
    assert client.get(b.url("other") + "/x").status_code == 200
    settled(b, 2)
    assert client.get(b.url("llm") + "/x").status_code == 402

    asking = bridge_cli("spend", "reset", "--route", "llm")  # stdin: not a terminal
    report = bridge_cli("spend", "--json")  # a bridge runs: the control API's document
    stdout, stderr = asking.communicate(timeout=60)
    assert asking.returncode == 2 and stdout == ""
    assert json.loads(report.communicate(timeout=60)[0]) == b.control().spend(None, "route")
    assert len(stderr.strip().splitlines()) == 1 and "--yes" in stderr
    assert client.get(b.url("llm") + "/x").status_code == 402  # nothing was reset

    code, _, stderr = run_cli("spend", "reset", "--route", "llm", "--yes")
    assert code == 0, stderr
    assert client.get(b.url("llm") + "/x").status_code == 200  # passes again
    report = settled(b, 2)
    assert {g["route"]: g["cost_usd"] for g in report["groups"]} == {
        "llm": "0.020000", "other": "0.010000"}  # the new call; the other route untouched
    assert len(upstream.calls) == 3
