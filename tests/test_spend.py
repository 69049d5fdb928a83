"""Spend and budgets, engine level: engine/budget.py on a real DiskStore with a fake wall
clock, engine/pricing.py against genai-prices' own numbers.

The realistic provider bodies and SSE streams built at the top of this module are shared
with tests/test_spend_e2e.py, which sends them through a real bridge.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import textwrap
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import genai_prices
import pytest
from genai_prices import Usage

from bridge_cli.config.loader import load_config
from bridge_cli.config.model import Budget, Spend
from bridge_cli.engine import budget as budget_mod
from bridge_cli.engine import pricing as pricing_mod
from bridge_cli.engine.budget import Budgets, period_bounds, window_of
from bridge_cli.engine.money import usd, usd_short
from bridge_cli.engine.pricing import (
    StreamUsage,
    UsageStripper,
    flat_price,
    price_response,
    worst_case,
)
from bridge_cli.errors import StoreError
from bridge_cli.store import DiskStore
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parent.parent
HALF_MICRO = Decimal("0.0000005")

# --- realistic provider bodies and streams (shared with test_spend_e2e.py) -----------------


def sse(events: list, *, named: bool = False, sep: str = "\n\n") -> bytes:
    """`data:` events (JSON objects, or raw strings such as "[DONE]"); `named` adds the
    `event: <type>` line Anthropic and the Responses API send."""
    out = []
    for e in events:
        data = e if isinstance(e, str) else json.dumps(e, separators=(",", ":"))
        head = f"event: {e['type']}\n" if named and isinstance(e, dict) else ""
        out.append(f"{head}data: {data}".replace("\n", sep[: len(sep) // 2]) + sep)
    return "".join(out).encode()


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict:
    return {
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def responses_usage(inp: int, out: int, cached: int = 0, reasoning: int = 0) -> dict:
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out}


def claude_usage(inp: int, out: int, read: int = 0, write: int = 0,
                 write_1h: int | None = None) -> dict:
    u = {"input_tokens": inp, "cache_creation_input_tokens": write,
         "cache_read_input_tokens": read, "output_tokens": out, "service_tier": "standard"}
    if write_1h is not None:
        u["cache_creation"] = {"ephemeral_5m_input_tokens": write - write_1h,
                               "ephemeral_1h_input_tokens": write_1h}
    return u


def gemini_usage(prompt: int, out: int, cached: int = 0, thoughts: int = 0) -> dict:
    u = {"promptTokenCount": prompt, "candidatesTokenCount": out,
         "totalTokenCount": prompt + out + thoughts,
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if cached:
        u["cachedContentTokenCount"] = cached
        u["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        u["thoughtsTokenCount"] = thoughts
    return u


TEXT = ["The ", "capital ", "of ", "France ", "is ", "Paris", "."]


def chat_body(model: str, usage: dict) -> dict:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion",
        "created": 1741569952, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TEXT),
                                             "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": usage, "service_tier": "default", "system_fingerprint": "fp_07871e2ad8",
    }


def chat_stream(model: str, usage: dict | None, *, sep: str = "\n\n") -> bytes:
    """An OpenAI chat stream; with `usage`, the stream_options.include_usage shape (usage
    null on every chunk, then a usage-only chunk with `choices: []`)."""
    base = {"id": "chatcmpl-BNvXoQ1sj0ziOV1rzpJEJJl9mWbXU", "object": "chat.completion.chunk",
            "created": 1744938452, "model": model, "service_tier": "default",
            "system_fingerprint": "fp_07871e2ad8"}
    deltas = [{"role": "assistant", "content": "", "refusal": None}] + [
        {"content": t} for t in TEXT]
    events = [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None,
                                    "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}]})
    if usage is not None:
        events = [{**e, "usage": None} for e in events]
        events.append({**base, "choices": [], "usage": usage})
    return sse([*events, "[DONE]"], sep=sep)


def responses_body(model: str, usage: dict, *, status: str = "completed") -> dict:
    output = []
    if usage["output_tokens_details"]["reasoning_tokens"]:
        output.append({"id": "rs_6807d9b4e7d0819195c2c4b8a6d1e5e5", "type": "reasoning",
                       "summary": []})
    output.append({"id": "msg_6807d9b8d4ac8191b5c2c4b8a6d1e5e5", "type": "message",
                   "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": "".join(TEXT),
                                "annotations": []}]})
    return {
        "id": "resp_6807d9a2f0a48191aa6b1fe0dc1dab3e", "object": "response",
        "created_at": 1745344930, "status": status, "background": False, "error": None,
        "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete"
                               else None),
        "instructions": None, "max_output_tokens": None, "model": model, "output": output,
        "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None}, "service_tier": "default",
        "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": None, "metadata": {},
    }


def responses_stream(model: str, usage: dict, *, final: str = "response.completed") -> bytes:
    done = responses_body(model, usage, status=final.split(".")[1])
    pending = {**done, "status": "in_progress", "output": [], "usage": None}
    msg = done["output"][-1]
    seq = itertools.count()
    events = [{"type": "response.created", "response": pending},
              {"type": "response.in_progress", "response": pending},
              {"type": "response.output_item.added", "output_index": 0,
               "item": {**msg, "status": "in_progress", "content": []}},
              {"type": "response.content_part.added", "item_id": msg["id"], "output_index": 0,
               "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}}]
    events += [{"type": "response.output_text.delta", "item_id": msg["id"], "output_index": 0,
                "content_index": 0, "delta": t} for t in TEXT]
    events += [{"type": "response.output_text.done", "item_id": msg["id"], "output_index": 0,
                "content_index": 0, "text": "".join(TEXT)},
               {"type": "response.content_part.done", "item_id": msg["id"], "output_index": 0,
                "content_index": 0, "part": msg["content"][0]},
               {"type": "response.output_item.done", "output_index": 0, "item": msg},
               {"type": final, "response": done}]
    return sse([{**e, "sequence_number": next(seq)} for e in events], named=True)


def claude_body(model: str, usage: dict, *, thinking: bool = False) -> dict:
    content = [{"type": "text", "text": "".join(TEXT)}]
    if thinking:
        content.insert(0, {"type": "thinking", "thinking": "The user asks for a capital.",
                           "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"})
    return {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": "end_turn",
            "stop_sequence": None, "usage": usage}


def claude_stream(model: str, usage: dict, *, thinking: bool = False,
                  cumulative_delta: bool = False) -> bytes:
    """message_start carries the input side (and output_tokens: 1), message_delta the
    final output_tokens; `cumulative_delta`: the newer API that repeats every count there."""
    start_usage = {**usage, "output_tokens": 1}
    delta_usage = ({k: v for k, v in usage.items() if k != "service_tier"} if cumulative_delta
                   else {"output_tokens": usage["output_tokens"]})
    events = [{"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": start_usage}}, {"type": "ping"}]
    index = 0
    if thinking:
        events += [
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "thinking_delta", "thinking": "The user asks for a capital."}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}},
            {"type": "content_block_stop", "index": 0}]
        index = 1
    events.append({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}})
    events += [{"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": t}} for t in TEXT]
    events += [{"type": "content_block_stop", "index": index},
               {"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage},
               {"type": "message_stop"}]
    return sse(events, named=True)


def gemini_body(model: str, usage: dict) -> dict:
    return {"candidates": [{"content": {"parts": [{"text": "".join(TEXT)}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": model,
            "responseId": "mKdXaJ-XL4ngnvgPnfOXqQ4"}


def gemini_stream(model: str, usage: dict) -> bytes:
    """Gemini's `alt=sse`: every chunk carries usageMetadata, the last one the totals; the
    API separates events with CRLF."""
    running = {"promptTokenCount": usage["promptTokenCount"],
               "totalTokenCount": usage["promptTokenCount"],
               "promptTokensDetails": usage["promptTokensDetails"]}
    chunks = [{"candidates": [{"content": {"parts": [{"text": t}], "role": "model"},
                               "index": 0}],
               "usageMetadata": running, "modelVersion": model,
               "responseId": "mKdXaJ-XL4ngnvgPnfOXqQ4"} for t in TEXT[:-1]]
    chunks.append({"candidates": [{"content": {"parts": [{"text": TEXT[-1]}], "role": "model"},
                                   "finishReason": "STOP", "index": 0}],
                   "usageMetadata": usage, "modelVersion": model,
                   "responseId": "mKdXaJ-XL4ngnvgPnfOXqQ4"})
    return sse(chunks, sep="\r\n\r\n")


@dataclass(frozen=True)
class Case:
    """One priced call: which API, streamed or not, the model the response names, and the
    provider-native usage of the complete response."""

    id: str
    api: str  # chat | responses | messages | gemini
    stream: bool
    model: str
    usage: dict
    thinking: bool = False
    cumulative_delta: bool = False

    @property
    def provider(self) -> str:
        return {"chat": "openai", "responses": "openai", "messages": "anthropic",
                "gemini": "google"}[self.api]

    @property
    def flavor(self) -> str:
        return {"chat": "chat", "responses": "responses"}.get(self.api, "default")

    @property
    def request_model(self) -> str:
        return {"gpt-4o-2024-08-06": "gpt-4o"}.get(self.model, self.model)

    def body(self) -> dict:
        """The complete (unstreamed) response."""
        if self.api == "chat":
            return chat_body(self.model, self.usage)
        if self.api == "responses":
            return responses_body(self.model, self.usage)
        if self.api == "messages":
            return claude_body(self.model, self.usage, thinking=self.thinking)
        return gemini_body(self.model, self.usage)

    def stream_bytes(self) -> bytes:
        if self.api == "chat":
            return chat_stream(self.model, self.usage)
        if self.api == "responses":
            return responses_stream(self.model, self.usage)
        if self.api == "messages":
            return claude_stream(self.model, self.usage, thinking=self.thinking,
                                 cumulative_delta=self.cumulative_delta)
        return gemini_stream(self.model, self.usage)

    def expected(self) -> Decimal:
        """genai-prices' own price of this call (USD), from the complete response."""
        extracted = genai_prices.extract_usage(self.body(), provider_id=self.provider,
                                               api_flavor=self.flavor)
        return extracted.calc_price().total_price

    def naive(self) -> Decimal:
        """The price if every input token were billed at the full input price (the cached
        tokens overbilling bug): a case with cache tokens must differ from it."""
        u = genai_prices.extract_usage(self.body(), provider_id=self.provider,
                                       api_flavor=self.flavor)
        flat = Usage(input_tokens=u.usage.input_tokens, output_tokens=u.usage.output_tokens)
        return genai_prices.calc_price(flat, u.model.id, provider_id=self.provider).total_price

    @property
    def cached(self) -> bool:
        u = self.usage
        return bool(u.get("prompt_tokens_details", {}).get("cached_tokens")
                    or u.get("input_tokens_details", {}).get("cached_tokens")
                    or u.get("cache_read_input_tokens") or u.get("cache_creation_input_tokens")
                    or u.get("cachedContentTokenCount"))


CASES = [
    # OpenAI chat completions
    Case("chat-gpt4o", "chat", False, "gpt-4o-2024-08-06", chat_usage(1200, 350)),
    Case("chat-4o-mini-cached", "chat", False, "gpt-4o-mini-2024-07-18",
         chat_usage(5200, 410, cached=4096)),
    Case("chat-o4-mini-reasoning-cached", "chat", False, "o4-mini-2025-04-16",
         chat_usage(2300, 1800, cached=1024, reasoning=1536)),
    Case("chat-gpt5-reasoning-cached", "chat", False, "gpt-5-2025-08-07",
         chat_usage(12000, 4200, cached=8192, reasoning=3800)),
    Case("chat-stream-4o-mini", "chat", True, "gpt-4o-mini-2024-07-18", chat_usage(950, 120)),
    Case("chat-stream-gpt41-cached", "chat", True, "gpt-4.1-2025-04-14",
         chat_usage(20480, 600, cached=18432)),
    Case("chat-stream-o3-mini-reasoning-cached", "chat", True, "o3-mini-2025-01-31",
         chat_usage(3100, 2600, cached=2048, reasoning=2304)),
    # OpenAI Responses API
    Case("responses-gpt41", "responses", False, "gpt-4.1-2025-04-14",
         responses_usage(3400, 800)),
    Case("responses-o3-reasoning-cached", "responses", False, "o3-2025-04-16",
         responses_usage(15000, 5100, cached=12800, reasoning=4600)),
    Case("responses-stream-4o-mini", "responses", True, "gpt-4o-mini-2024-07-18",
         responses_usage(700, 90)),
    Case("responses-stream-gpt5-mini-reasoning-cached", "responses", True,
         "gpt-5-mini-2025-08-07", responses_usage(9000, 3300, cached=6144, reasoning=2900)),
    # Anthropic messages
    Case("claude-sonnet4", "messages", False, "claude-sonnet-4-20250514", claude_usage(1800, 420)),
    Case("claude-haiku35-cache-read", "messages", False, "claude-3-5-haiku-20241022",
         claude_usage(25, 300, read=6000)),
    Case("claude-opus41-cache-write", "messages", False, "claude-opus-4-1-20250805",
         claude_usage(40, 650, write=9000)),
    Case("claude-sonnet45-thinking-read-write-1h", "messages", False,
         "claude-sonnet-4-5-20250929", claude_usage(12, 900, read=15000, write=2200,
                                                    write_1h=2200), thinking=True),
    Case("claude-sonnet45-long-context", "messages", False, "claude-sonnet-4-5-20250929",
         claude_usage(210000, 1500)),
    Case("claude-stream-sonnet4", "messages", True, "claude-sonnet-4-20250514",
         claude_usage(600, 230)),
    Case("claude-stream-37-read-write", "messages", True, "claude-3-7-sonnet-20250219",
         claude_usage(30, 700, read=12000, write=3000)),
    Case("claude-stream-opus4-thinking-write-1h", "messages", True, "claude-opus-4-20250514",
         claude_usage(50, 500, write=8000, write_1h=6000), thinking=True),
    Case("claude-stream-haiku45-cumulative-delta", "messages", True, "claude-haiku-4-5-20251001",
         claude_usage(20, 1200, read=4000), cumulative_delta=True),
    # Gemini
    Case("gemini-25-flash", "gemini", False, "gemini-2.5-flash", gemini_usage(1500, 300)),
    Case("gemini-25-pro-thoughts", "gemini", False, "gemini-2.5-pro",
         gemini_usage(4000, 800, thoughts=1900)),
    Case("gemini-20-flash-cached", "gemini", False, "gemini-2.0-flash",
         gemini_usage(30000, 500, cached=28000)),
    Case("gemini-25-pro-long-context", "gemini", False, "gemini-2.5-pro",
         gemini_usage(250000, 2000, thoughts=1000)),
    Case("gemini-stream-25-flash-thoughts", "gemini", True, "gemini-2.5-flash",
         gemini_usage(2200, 640, thoughts=1200)),
    Case("gemini-stream-25-pro-cached-thoughts", "gemini", True, "gemini-2.5-pro",
         gemini_usage(60000, 900, cached=50000, thoughts=700)),
]
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses",
         "messages": "/v1/messages", "gemini": "/v1beta/models/{model}:generateContent"}


def test_the_case_table_covers_what_the_issue_asks_for():
    assert len(CASES) >= 20
    assert {c.api for c in CASES} == {"chat", "responses", "messages", "gemini"}
    for api in ("chat", "responses", "messages", "gemini"):
        assert {c.stream for c in CASES if c.api == api} == {True, False}, api
        assert any(c.cached for c in CASES if c.api == api), api
        assert any(c.cached for c in CASES if c.api == api and c.stream), api
    assert any(c.usage.get("cache_creation_input_tokens") for c in CASES)
    assert any(c.usage.get("completion_tokens_details", {}).get("reasoning_tokens")
               for c in CASES if c.stream)
    assert any(c.usage.get("thoughtsTokenCount") for c in CASES if c.stream)
    for c in CASES:
        assert c.expected() > Decimal("0.0001"), c.id  # big enough that errors show
        if c.cached:  # cache tokens change the price: a test that ignored them would fail
            assert abs(c.expected() - c.naive()) > Decimal("0.00001"), c.id


# --- pricing: whole bodies and streams -------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_price_response_equals_genai_prices(case):
    priced = price_response(case.provider, case.body(), path=PATHS[case.api])
    assert priced.status == "priced", priced.reason
    assert abs(Decimal(usd(priced.cost)) - case.expected()) <= HALF_MICRO
    assert priced.snapshot == f"genai-prices {genai_prices.__version__}"


def _feed(data: bytes, sizes) -> StreamUsage:
    su = StreamUsage()
    i = 0
    for n in sizes:
        if i >= len(data):
            break
        su.feed(data[i:i + n])
        i += n
    if i < len(data):
        su.feed(data[i:])
    return su


@pytest.mark.parametrize("case", [c for c in CASES if c.stream] + [
    Case("claude-cumulative-1h", "messages", True, "claude-sonnet-4-20250514",
         claude_usage(10, 70, read=500, write=4000, write_1h=1000), cumulative_delta=True),
    Case("chat-stream-gpt5", "chat", True, "gpt-5-2025-08-07",
         chat_usage(4000, 3000, cached=2048, reasoning=2800)),
    Case("responses-stream-o3", "responses", True, "o3-2025-04-16",
         responses_usage(2000, 900, cached=1024, reasoning=700)),
    Case("gemini-stream-20-flash-cached", "gemini", True, "gemini-2.0-flash",
         gemini_usage(9000, 100, cached=8000)),
], ids=lambda c: c.id)
def test_stream_usage_prices_a_stream_like_the_whole_response(case):
    data = case.stream_bytes()
    path = PATHS[case.api]
    rng = random.Random(case.id)
    for sizes in ([len(data)], itertools.repeat(1), (rng.randint(1, 40) for _ in range(10**6))):
        su = _feed(data, sizes)
        rebuilt = su.response()
        assert rebuilt is not None, case.id
        priced = price_response(case.provider, rebuilt, path=path)
        assert priced.status == "priced", priced.reason
        assert abs(Decimal(usd(priced.cost)) - case.expected()) <= HALF_MICRO, case.id


def test_stream_usage_takes_the_cache_and_reasoning_tokens_of_each_provider():
    su = _feed(chat_stream("gpt-4.1-2025-04-14", chat_usage(20480, 600, cached=18432)), [7] * 10**4)
    tokens = price_response("openai", su.response(), path="/v1/chat/completions").usage
    assert tokens["input_tokens"] == 20480 and tokens["cache_read_tokens"] == 18432
    su = _feed(claude_stream("claude-3-7-sonnet-20250219",
                             claude_usage(30, 700, read=12000, write=3000)), [5] * 10**4)
    tokens = price_response("anthropic", su.response()).usage
    assert tokens == {"input_tokens": 15030, "cache_write_tokens": 3000,
                      "cache_read_tokens": 12000, "output_tokens": 700}
    su = _feed(responses_stream("o3-2025-04-16", responses_usage(2000, 900, 1024, 700)),
               [3] * 10**5)
    tokens = price_response("openai", su.response(), path="/v1/responses").usage
    assert tokens["output_reasoning_tokens"] == 700 and tokens["cache_read_tokens"] == 1024
    su = _feed(gemini_stream("gemini-2.5-flash", gemini_usage(2200, 640, thoughts=1200)),
               [11] * 10**4)
    tokens = price_response("google", su.response()).usage
    assert tokens["output_tokens"] == 640 + 1200 and tokens["output_reasoning_tokens"] == 1200


def test_a_stream_without_usage_gives_none_not_zero():
    su = _feed(chat_stream("gpt-4o-mini", None), [13] * 1000)
    assert su.response() is None
    su = StreamUsage()
    su.feed(b"data: {\"partial\": tr")  # a stream cut mid-event
    assert su.response() is None


def test_stream_usage_reads_crlf_and_data_without_a_space():
    usage = chat_usage(1000, 100, cached=500)
    data = chat_stream("gpt-4o-mini-2024-07-18", usage, sep="\r\n\r\n").replace(b"data: ", b"data:")
    su = _feed(data, [9] * 10**4)
    priced = price_response("openai", su.response(), path="/v1/chat/completions")
    want = Case("x", "chat", True, "gpt-4o-mini-2024-07-18", usage).expected()
    assert abs(Decimal(usd(priced.cost)) - want) <= HALF_MICRO


def test_stream_usage_prices_an_incomplete_responses_stream():
    usage = responses_usage(3000, 512, cached=1024, reasoning=512)
    su = _feed(responses_stream("o4-mini-2025-04-16", usage, final="response.incomplete"),
               [64] * 1000)
    rebuilt = su.response()
    assert rebuilt is not None
    want = genai_prices.extract_usage(responses_body("o4-mini-2025-04-16", usage),
                                      provider_id="openai", api_flavor="responses")
    priced = price_response("openai", rebuilt, path="/v1/responses")
    assert abs(Decimal(usd(priced.cost)) - want.calc_price().total_price) <= HALF_MICRO


def test_price_response_model_comes_from_the_response_then_the_request():
    usage = chat_usage(1000, 200)
    from_body = price_response("openai", chat_body("gpt-4o-mini-2024-07-18", usage),
                               path="/v1/chat/completions", request_model="gpt-4o")
    assert from_body.model == "gpt-4o-mini-2024-07-18"  # the response wins, as it names it
    nameless = {k: v for k, v in chat_body("x", usage).items() if k != "model"}
    fallback = price_response("openai", nameless, path="/v1/chat/completions",
                              request_model="gpt-4o")
    want = genai_prices.calc_price(Usage(input_tokens=1000, output_tokens=200), "gpt-4o",
                                   provider_id="openai").total_price
    assert fallback.status == "priced"
    assert abs(Decimal(usd(fallback.cost)) - want) <= HALF_MICRO


def test_price_response_says_why_it_could_not_price():
    assert price_response("openai", ["not", "an", "object"]).status == "unpriced"
    no_usage = price_response("openai", {"model": "gpt-4o", "choices": []},
                              path="/v1/chat/completions")
    assert no_usage.status == "unpriced" and no_usage.cost == 0 and "usage" in no_usage.reason
    unknown = price_response("openai", chat_body("acme-private-7b", chat_usage(10, 10)),
                             path="/v1/chat/completions")
    assert unknown.status == "unpriced" and "acme-private-7b" in unknown.reason


# --- pricing: `pricing:` overrides and flat prices ---------------------------------------------


def _config(tmp_path, text: str):
    path = tmp_path / "bridge.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


PRICING = """
    version: 2
    pricing:
      - provider: openai
        id: acme-llm-7b
        prices: {input_mtok: 2, output_mtok: 8, cache_read_mtok: 0.5}
      - provider: openai
        id: ft-mini
        match: {starts_with: "ft:gpt-4o-mini-2024-07-18:acme"}
        prices: {input_mtok: 0.3, output_mtok: 1.2, requests_kcount: 1}
      - provider: anthropic
        id: claude-sonnet-4-20250514
        prices: {input_mtok: 1, output_mtok: 5, cache_read_mtok: 0.1, cache_write_mtok: 1.25}
    """


def test_pricing_overrides_price_fine_tuned_and_known_models(tmp_path):
    cfg = _config(tmp_path, PRICING)
    ft = price_response("openai", chat_body("ft:gpt-4o-mini-2024-07-18:acme::BX1y2z3",
                                            chat_usage(100000, 10000)),
                        path="/v1/chat/completions", pricing=cfg.pricing)
    assert (ft.status, ft.snapshot) == ("priced", "config pricing")
    assert ft.cost == 30000 + 12000 + 1000  # $0.3 and $1.2 per million, + $1 per 1000 calls
    # an override wins over genai-prices' own price for a model it knows
    claude = price_response("anthropic", claude_body("claude-sonnet-4-20250514",
                                                     claude_usage(1000, 2000, 3000, 4000)),
                            pricing=cfg.pricing)
    assert claude.cost == 1000 + 10000 + 300 + 5000  # input, output, cache read, cache write
    # ...and applies to its provider only
    gpt = price_response("openai", chat_body("claude-sonnet-4-20250514", chat_usage(1000, 10)),
                         path="/v1/chat/completions", pricing=cfg.pricing)
    assert gpt.snapshot != "config pricing"


def test_pricing_overrides_price_a_private_model(tmp_path):
    cfg = _config(tmp_path, PRICING)
    private = price_response("openai", chat_body("acme-llm-7b", chat_usage(10000, 2000, 4000)),
                             path="/v1/chat/completions", pricing=cfg.pricing)
    # 6000 uncached at $2, 4000 cached at $0.5, 2000 out at $8 (per million)
    assert (private.status, private.cost) == ("priced", 12000 + 2000 + 16000)
    assert private.snapshot == "config pricing" and private.model == "acme-llm-7b"


def test_flat_prices_are_per_request_or_per_method(tmp_path):
    cfg = _config(tmp_path, """
        version: 2
        routes:
          - name: flat
            listen: 127.0.0.1:0
            upstreams: [{name: up, url: "http://127.0.0.1:9"}]
            spend: {per_request_usd: 0.002}
          - name: methods
            listen: 127.0.0.1:0
            upstreams: [{name: up, url: "http://127.0.0.1:9"}]
            spend: {per_request_usd: {GET: 0, post: 0.01}}
        """)
    flat, methods = cfg.route("flat").spend, cfg.route("methods").spend
    assert flat.per_request_usd == 2000 and methods.per_request_usd == {"GET": 0, "POST": 10000}
    assert [flat_price(flat, m).cost for m in ("GET", "POST", "DELETE")] == [2000] * 3
    assert [flat_price(methods, m).cost for m in ("GET", "post", "POST", "DELETE")] == [
        0, 10000, 10000, 0]
    assert flat_price(flat, "GET").status == "flat"
    # a budget reserves exactly the flat price
    assert worst_case(methods, "POST", b'{"max_tokens": 100000}') == 10000
    assert worst_case(methods, "GET", b"") == 0


# --- the worst case a budget reserves ---------------------------------------------------------


def _body(**doc) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "Hello " * 200}], **doc}).encode()


def test_worst_case_is_the_body_size_plus_max_tokens_at_the_output_price():
    spend = Spend(provider="openai")
    # USD per million tokens == micro-dollars per token
    out_price = genai_prices.calc_price(Usage(output_tokens=1_000_000), "gpt-4o",
                                        provider_id="openai").total_price
    small = worst_case(spend, "POST", _body(model="gpt-4o", max_tokens=100))
    big = worst_case(spend, "POST", _body(model="gpt-4o", max_tokens=900))
    assert big - small == 800 * out_price  # each max_tokens costs the output price
    assert worst_case(spend, "POST", _body(model="gpt-4o", max_completion_tokens=900)) - \
        worst_case(spend, "POST", _body(model="gpt-4o", max_completion_tokens=100)) == 8000
    longer = worst_case(spend, "POST", _body(model="gpt-4o", max_tokens=100, note="x" * 30000))
    assert longer - small >= 30000 // 4 * 2.5  # a bigger body reserves more input
    # never below what the call can really cost: input tokens can't outnumber the bytes / 4
    body = _body(model="gpt-4o", max_tokens=500)
    real = genai_prices.calc_price(Usage(input_tokens=len(body) // 4, output_tokens=500),
                                   "gpt-4o", provider_id="openai").total_price
    assert worst_case(spend, "POST", body) >= real * 1_000_000


def test_worst_case_without_max_tokens_uses_default_max_tokens():
    body = _body(model="gpt-4o")
    default = worst_case(Spend(provider="openai"), "POST", body)
    smaller = worst_case(Spend(provider="openai", default_max_tokens=96), "POST", body)
    assert default - smaller == (4096 - 96) * 10  # gpt-4o: $10 per million output tokens


def test_worst_case_reads_anthropic_responses_and_gemini_limits():
    claude = Spend(provider="anthropic")
    a = worst_case(claude, "POST", _body(model="claude-sonnet-4-20250514", max_tokens=1000))
    b = worst_case(claude, "POST", _body(model="claude-sonnet-4-20250514", max_tokens=3000))
    assert b - a == 2000 * 15  # $15 per million output tokens
    r1 = worst_case(Spend(provider="openai"), "POST", _body(model="o3", max_output_tokens=1000))
    r2 = worst_case(Spend(provider="openai"), "POST", _body(model="o3", max_output_tokens=2000))
    assert r2 - r1 == 1000 * 8
    google = Spend(provider="google")
    g1 = worst_case(google, "POST", _body(generationConfig={"maxOutputTokens": 100}))
    g2 = worst_case(google, "POST", _body(generationConfig={"maxOutputTokens": 200}))
    assert g2 > g1


def test_worst_case_uses_pricing_overrides():
    pricing = ({"provider": "openai", "id": "acme-llm-7b",
                "prices": {"input_mtok": 1, "output_mtok": 1000}},)
    a = worst_case(Spend(provider="openai"), "POST", _body(model="acme-llm-7b", max_tokens=10),
                   pricing)
    b = worst_case(Spend(provider="openai"), "POST", _body(model="acme-llm-7b", max_tokens=20),
                   pricing)
    assert b - a == 10 * 1000


def test_an_unknown_model_reserves_at_least_the_dearest_known_one():
    body = _body(model="gpt-99-preview", max_tokens=4000)
    unknown = worst_case(Spend(provider="openai"), "POST", body)
    for known in ("o1-pro", "gpt-4.5-preview", "gpt-4o"):
        assert unknown >= worst_case(Spend(provider="openai"), "POST",
                                     body.replace(b"gpt-99-preview", known.encode())), known


# --- UsageStripper ------------------------------------------------------------------------


def _strip(data: bytes, sizes) -> tuple[list[bytes], bytes]:
    s = UsageStripper()
    out, i = [], 0
    for n in sizes:
        if i >= len(data):
            break
        out.append(s(data[i:i + n]))
        i += n
    return out, b"".join(out) + s.rest()


def test_usage_stripper_drops_only_the_usage_chunk():
    usage = chat_usage(950, 120)
    with_usage = chat_stream("gpt-4o-mini", usage)
    events = with_usage.split(b"\n\n")
    usage_event = next(e for e in events if b'"choices":[]' in e)
    want = with_usage.replace(usage_event + b"\n\n", b"")
    for sizes in ([len(with_usage)], [1] * len(with_usage), [17] * len(with_usage)):
        _, got = _strip(with_usage, sizes)
        assert got == want
    assert b"[DONE]" in want and b'"usage":null' in want and b"Paris" in want
    # a stream whose client asked for nothing unusual passes unchanged
    plain = chat_stream("gpt-4o-mini", None)
    assert _strip(plain, [5] * len(plain))[1] == plain


def test_usage_stripper_keeps_other_choiceless_chunks_and_streams_as_it_goes():
    # Azure sends a first chunk with `choices: []` and prompt_filter_results: not usage
    azure = {"choices": [], "created": 0, "id": "", "model": "",
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    data = sse([azure]) + chat_stream("gpt-4o", chat_usage(10, 2))
    _, got = _strip(data, [23] * len(data))
    assert got.startswith(sse([azure])) and b'"choices":[],"usage"' not in got
    # every complete event leaves as soon as it is complete
    pieces, _ = _strip(data, [len(sse([azure])) + 4])
    assert pieces[0] == sse([azure])


def test_usage_stripper_handles_crlf_streams():
    data = chat_stream("gpt-4o-mini", chat_usage(950, 120), sep="\r\n\r\n")
    first_event = data.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    pieces, got = _strip(data, [len(first_event)] + [len(data)])
    assert pieces[0] == first_event  # streamed at once, not held to the end
    assert b'"choices":[]' not in got and got.endswith(b"data: [DONE]\r\n\r\n")


# --- budgets: a real DiskStore and a fake wall clock --------------------------------------------


@pytest.fixture
def local_tz(monkeypatch):
    """Run the test in a given local time zone (TZ), restored afterwards."""

    def use(name: str) -> ZoneInfo:
        monkeypatch.setenv("TZ", name)
        time.tzset()
        return ZoneInfo(name)

    yield use
    monkeypatch.undo()
    time.tzset()


def at(tz: ZoneInfo, *args, fold: int = 0) -> float:
    return dt.datetime(*args, tzinfo=tz, fold=fold).timestamp()


DAY = Budget(limit_usd=50_000, period="day")
ROUTE = "route:llm"


def test_reserve_settle_release_arithmetic(store, local_tz):
    tz = local_tz("Europe/Berlin")
    clock = FakeClock(at(tz, 2026, 11, 25, 12, 0))
    b = Budgets(store, clock)
    r, refusal = b.reserve([(ROUTE, DAY)], 10_000)
    assert refusal is None and r.amount == 10_000 and r.held == ((ROUTE, "2026-11-25"),)
    assert (b.committed(ROUTE, DAY), b.spent(ROUTE, DAY)) == (10_000, 0)
    b.settle(r, 3_000)  # cheaper than the worst case: the difference comes back
    assert (b.committed(ROUTE, DAY), b.spent(ROUTE, DAY)) == (3_000, 3_000)
    r2, _ = b.reserve([(ROUTE, DAY)], 10_000)
    b.settle(r2, 12_500)  # dearer than reserved (a flat price changed, a bad estimate)
    assert (b.committed(ROUTE, DAY), b.spent(ROUTE, DAY)) == (15_500, 15_500)
    r3, _ = b.reserve([(ROUTE, DAY)], 20_000)
    assert b.committed(ROUTE, DAY) == 35_500
    b.release(r3)  # the call failed: nothing spent, everything back
    assert (b.committed(ROUTE, DAY), b.spent(ROUTE, DAY)) == (15_500, 15_500)
    # the limit is inclusive: 15_500 + 34_500 == 50_000 fits, one micro-dollar more doesn't
    assert b.reserve([(ROUTE, DAY)], 34_501)[1] is not None
    full, refusal = b.reserve([(ROUTE, DAY)], 34_500)
    assert refusal is None and b.committed(ROUTE, DAY) == 50_000
    r0, refusal = b.reserve([(ROUTE, DAY)], 1)
    assert refusal is not None and r0.held == () and r0.amount == 0
    assert (refusal.scope, refusal.limit, refusal.committed, refusal.action) == (
        ROUTE, 50_000, 50_000, "block")
    assert refusal.resets_at == dt.datetime(2026, 11, 26, tzinfo=tz)


def test_a_reservation_settles_in_the_period_it_was_made(store, local_tz):
    tz = local_tz("Europe/Berlin")
    clock = FakeClock(at(tz, 2026, 11, 25, 23, 59, 59))
    b = Budgets(store, clock)
    r, _ = b.reserve([(ROUTE, DAY)], 10_000)
    clock.now += 2  # the answer arrives after midnight
    assert b.committed(ROUTE, DAY) == 0
    b.settle(r, 4_000)
    assert (b.committed(ROUTE, DAY), b.spent(ROUTE, DAY)) == (0, 0)  # the new day is clean
    clock.now -= 2
    assert (b.committed(ROUTE, DAY), b.spent(ROUTE, DAY)) == (4_000, 4_000)


def test_reservations_are_all_or_none_across_route_and_global(store):
    b = Budgets(store, FakeClock(1_790_000_000.0))
    route = Budget(limit_usd=100_000)
    glob = Budget(limit_usd=25_000)
    both = [(ROUTE, route), ("global", glob)]
    ok, refusal = b.reserve(both, 20_000)
    assert refusal is None and {s for s, _ in ok.held} == {ROUTE, "global"}
    no, refusal = b.reserve(both, 10_000)
    assert refusal.scope == "global" and no.held == ()
    assert b.committed(ROUTE, route) == 20_000  # the route's hold was given back
    # a warn budget that is passed lets the call go, counts it, and says so
    warn = Budget(limit_usd=25_000, action="warn")
    r, refusal = b.reserve([(ROUTE, route), ("global", warn)], 10_000)
    assert refusal is not None and refusal.action == "warn" and r.amount == 10_000
    assert b.committed("global", warn) == 30_000 and b.committed(ROUTE, route) == 30_000


class SlowStore:
    """A real DiskStore whose every call takes a little longer (wide race windows) and is
    tried again when diskcache reports the store busy (its 50 ms timeout is short on
    purpose): what's tested here is the atomicity of the reservations, not the timeout."""

    def __init__(self, inner: DiskStore) -> None:
        self.inner = inner

    def __getattr__(self, name):
        fn = getattr(self.inner, name)

        def slow(*args, **kw):
            for _ in range(500):
                time.sleep(0.001)
                try:
                    return fn(*args, **kw)
                except StoreError:
                    continue
            raise AssertionError(f"store busy for good: {name}")

        return slow


def test_concurrent_reservations_never_pass_the_limit(tmp_path):
    store = DiskStore(tmp_path / "store")
    try:
        b = Budgets(SlowStore(store), FakeClock(1_790_000_000.0))
        route, glob = Budget(limit_usd=50_000), Budget(limit_usd=30_000)
        threads, granted, lock = 40, [], threading.Lock()

        def run(budgets) -> int:
            granted.clear()
            start = threading.Barrier(threads)

            def call():
                start.wait()
                _, refusal = b.reserve(budgets, 10_000)
                with lock:
                    granted.append(refusal is None)

            workers = [threading.Thread(target=call) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(60)
            assert len(granted) == threads
            return sum(granted)

        assert run([(ROUTE, route)]) == 5  # 40 at once, room for 5: exactly 5
        assert b.committed(ROUTE, route) == 50_000
        # against two budgets at once the tighter one decides, and nothing leaks
        other = "route:other"
        assert run([(other, route), ("global", glob)]) == 3
        assert b.committed("global", glob) == 30_000 and b.committed(other, route) == 30_000
    finally:
        store.close()


class BusyOn:
    """A DiskStore that reports itself busy (StoreError) when a key containing `word` is
    reserved, as diskcache does under contention."""

    def __init__(self, inner: DiskStore, word: str) -> None:
        self.inner, self.word = inner, word

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def reserve(self, key, amount, limit):
        if self.word in key:
            raise StoreError(f"store: reserve {key!r} failed: busy")
        return self.inner.reserve(key, amount, limit)


def test_a_busy_store_leaves_no_reservation_behind(store):
    b = Budgets(BusyOn(store, "global"), FakeClock(1_790_000_000.0))
    both = [(ROUTE, DAY), ("global", DAY)]
    try:
        b.reserve(both, 10_000)
    except StoreError:
        pass
    assert b.committed(ROUTE, DAY) == 0


def test_budget_state_persists_in_the_store(tmp_path):
    clock = FakeClock(1_790_000_000.0)
    with DiskStore(tmp_path / "store") as s:
        r, _ = Budgets(s, clock).reserve([(ROUTE, DAY)], 30_000)
        Budgets(s, clock).settle(r, 30_000)
    with DiskStore(tmp_path / "store") as s:  # a new process, the same state directory
        b = Budgets(s, clock)
        assert b.spent(ROUTE, DAY) == 30_000
        assert b.reserve([(ROUTE, DAY)], 30_000)[1] is not None


def test_reset_forgets_one_scope_only(store):
    b = Budgets(store, FakeClock(1_790_000_000.0))
    for scope in (ROUTE, "route:llm2", "global"):
        r, _ = b.reserve([(scope, DAY)], 1_000)
        b.settle(r, 1_000)
    assert b.crossed_alert(ROUTE, Budget(limit_usd=1_000)) is True
    assert b.reset(ROUTE) == 3  # committed, spent, alerted
    assert b.spent(ROUTE, DAY) == 0
    assert b.spent("route:llm2", DAY) == 1_000 and b.spent("global", DAY) == 1_000


# --- periods ----------------------------------------------------------------------------------


@pytest.mark.parametrize("period,now,pid,resets", [
    ("hour", (2026, 11, 25, 14, 37), "2026-11-25T14", (2026, 11, 25, 15)),
    ("hour", (2026, 12, 31, 23, 59), "2026-12-31T23", (2027, 1, 1, 0)),
    ("day", (2026, 11, 25, 14, 37), "2026-11-25", (2026, 11, 26)),
    ("day", (2026, 12, 31, 0, 0), "2026-12-31", (2027, 1, 1)),
    ("day", (2028, 2, 28, 12, 0), "2028-02-28", (2028, 2, 29)),
    ("week", (2026, 11, 25, 14, 37), "2026-W48", (2026, 11, 30)),  # a Wednesday
    ("week", (2026, 11, 29, 23, 59), "2026-W48", (2026, 11, 30)),  # Sunday: same week
    ("week", (2026, 11, 30, 0, 0), "2026-W49", (2026, 12, 7)),  # Monday: the next one
    ("week", (2026, 1, 1, 9, 0), "2026-W01", (2026, 1, 5)),  # ISO: the week of Thursday
    ("week", (2027, 1, 1, 9, 0), "2026-W53", (2027, 1, 4)),
    ("month", (2026, 11, 25, 14, 37), "2026-11", (2026, 12, 1)),
    ("month", (2026, 12, 31, 23, 59), "2026-12", (2027, 1, 1)),
    ("month", (2026, 1, 31, 12, 0), "2026-01", (2026, 2, 1)),
    ("month", (2028, 2, 29, 12, 0), "2028-02", (2028, 3, 1)),
])
def test_calendar_period_ids_and_reset_times(period, now, pid, resets):
    got_id, got_reset = period_bounds(period, dt.datetime(*now))
    assert (got_id, got_reset) == (pid, dt.datetime(*resets))


def test_period_ids_sort_by_time():
    days = [dt.datetime(2026, 1, 1) + dt.timedelta(days=d) for d in range(0, 800, 3)]
    for period in ("hour", "day", "week", "month"):
        ids = [period_bounds(period, d)[0] for d in days]
        assert ids == sorted(ids), period
    with pytest.raises(ValueError):
        period_bounds("fortnight", dt.datetime(2026, 1, 1))


def test_periods_follow_the_local_time_zone(local_tz):
    tz = local_tz("Asia/Kolkata")  # UTC+05:30
    wall = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC).timestamp()  # 01:30 on the 26th
    w = window_of(Budget(limit_usd=1, period="day"), wall)
    assert w.bucket == "2026-11-26"
    assert w.resets_at == dt.datetime(2026, 11, 27, tzinfo=tz)
    assert window_of(Budget(limit_usd=1, period="hour"), wall).bucket == "2026-11-26T01"


@pytest.mark.parametrize("period,now,resets", [
    ("month", (2026, 3, 15, 12, 0), (2026, 4, 1)),  # spring forward inside the month
    ("week", (2026, 10, 20, 12, 0), (2026, 10, 26)),  # fall back inside the week
    ("day", (2026, 10, 25, 0, 30), (2026, 10, 26)),  # the 25-hour day
])
def test_reset_times_are_right_across_daylight_saving_changes(local_tz, period, now, resets):
    tz = local_tz("Europe/Berlin")
    w = window_of(Budget(limit_usd=1, period=period), at(tz, *now))
    assert w.resets_at.timestamp() == at(tz, *resets)


def test_an_hour_budget_counts_each_hour_of_a_dst_night_once(local_tz):
    tz = local_tz("Europe/Berlin")
    hour = Budget(limit_usd=1, period="hour")
    first = window_of(hour, at(tz, 2026, 10, 25, 2, 30, fold=0))
    second = window_of(hour, at(tz, 2026, 10, 25, 2, 30, fold=1))
    assert first.bucket != second.bucket


# --- rolling windows ---------------------------------------------------------------------------


ROLLING = Budget(limit_usd=50_000, period=None, rolling=24 * 3600.0)


def test_a_rolling_window_forgets_old_spend_and_has_no_reset_time(store):
    t0 = 1_790_000_000.0 - 1_790_000_000.0 % 3600 + 600  # ten past an hour
    clock = FakeClock(t0)
    b = Budgets(store, clock)
    r, _ = b.reserve([(ROUTE, ROLLING)], 40_000)
    b.settle(r, 40_000)
    for hours in (1, 6, 12, 22.5):
        clock.now = t0 + hours * 3600
        assert b.spent(ROUTE, ROLLING) == 40_000, hours
        refusal = b.reserve([(ROUTE, ROLLING)], 20_000)[1]
        assert refusal is not None and refusal.resets_at is None and refusal.committed == 40_000
    r, _ = b.reserve([(ROUTE, ROLLING)], 10_000)  # what's left still fits, in a new bucket
    b.settle(r, 10_000)
    assert b.committed(ROUTE, ROLLING) == 50_000
    clock.now = t0 + 25 * 3600  # the first call aged out, the second one not
    assert b.spent(ROUTE, ROLLING) == 10_000
    assert b.reserve([(ROUTE, ROLLING)], 40_000)[1] is None
    clock.now = t0 + 60 * 3600
    assert b.committed(ROUTE, ROLLING) == 0


@pytest.mark.parametrize("window,spent_at_minute,later", [
    (24 * 3600.0, 59, 23.5 * 3600),
    (1800.0, 50, 15 * 60),
])
def test_a_rolling_window_holds_spend_for_the_whole_window(store, window, spent_at_minute, later):
    rolling = Budget(limit_usd=50_000, period=None, rolling=window)
    t0 = 1_790_000_000.0 - 1_790_000_000.0 % 3600 + spent_at_minute * 60
    clock = FakeClock(t0)
    b = Budgets(store, clock)
    r, _ = b.reserve([(ROUTE, rolling)], 40_000)
    b.settle(r, 40_000)
    clock.now = t0 + later  # still inside the window
    assert b.spent(ROUTE, rolling) == 40_000


# --- alerts --------------------------------------------------------------------------------------


def test_alert_fires_once_per_period_when_alert_at_is_reached(store, local_tz):
    tz = local_tz("Europe/Berlin")
    clock = FakeClock(at(tz, 2026, 11, 25, 9, 0))
    b = Budgets(store, clock)
    budget = Budget(limit_usd=100_000, period="day", alert_at=0.8)

    def spend(amount):
        r, _ = b.reserve([(ROUTE, budget)], amount)
        b.settle(r, amount)
        return b.crossed_alert(ROUTE, budget)

    assert spend(50_000) is False
    assert spend(29_999) is False  # 79.999 %
    assert spend(1) is True  # 80 % exactly
    assert [spend(1_000) for _ in range(5)] == [False] * 5  # once, not per call
    clock.now = at(tz, 2026, 11, 26, 9, 0)  # a new day, a new period
    assert spend(10_000) is False
    assert spend(75_000) is True
    assert spend(1_000) is False


def test_alert_counts_reservations_in_flight(store):
    b = Budgets(store, FakeClock(1_790_000_000.0))
    budget = Budget(limit_usd=100_000, alert_at=0.5)
    b.reserve([(ROUTE, budget)], 60_000)
    assert b.crossed_alert(ROUTE, budget) is True


# --- money and recipes ---------------------------------------------------------------------------


def test_money_is_exact():
    assert usd(12345) == "0.012345" and usd(0) == "0.000000" and usd(5_000_000) == "5.000000"
    assert usd_short(12345) == "$0.0123" and usd_short(12_345_678) == "$12.35"


@pytest.mark.parametrize("recipe,route", [("openai", "openai"), ("anthropic", "anthropic")])
def test_llm_recipes_carry_a_daily_warn_budget(recipe, route):
    cfg = load_config(REPO / "recipes" / f"{recipe}.yaml")
    r = cfg.route(route)
    assert r.spend is not None and r.spend.provider == recipe
    assert r.budget is not None
    assert (r.budget.period, r.budget.rolling, r.budget.action) == ("day", None, "warn")
    assert r.budget.limit_usd > 0 and 0 < r.budget.alert_at < 1


def test_budget_module_has_no_mitmproxy_imports():
    src = Path(budget_mod.__file__).read_text() + Path(pricing_mod.__file__).read_text()
    assert "mitmproxy" not in src
