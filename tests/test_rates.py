"""The prepared-price path (engine/rates.py) gives exactly genai-prices' total, for every
model of the providers bridge prices, over usages with and without cached, audio and
reasoning parts; what genai-prices refuses is still refused, with its own message."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, data_snapshot

from bridge_cli.engine import rates
from bridge_cli.engine.pricing import price_response

AT = datetime(2026, 6, 1, tzinfo=UTC)
PROVIDERS = ["openai", "anthropic", "google", "groq", "mistral", "deepseek"]


def usages(seed: int) -> list[Usage]:
    rng = random.Random(seed)
    out = [Usage(input_tokens=24, output_tokens=9), Usage(input_tokens=0, output_tokens=0),
           Usage(input_tokens=1_000_000), Usage(output_tokens=7)]
    for _ in range(12):
        inp = rng.randint(0, 3_000_000)
        out.append(Usage(input_tokens=inp, output_tokens=rng.randint(0, 200_000),
                         cache_read_tokens=rng.randint(0, inp // 2),
                         cache_write_tokens=rng.randint(0, inp // 4)))
        out.append(Usage(input_tokens=inp, output_tokens=rng.randint(0, 9_000),
                         input_audio_tokens=rng.randint(0, inp // 3)))
    return out


def models_of(provider_id: str):
    provider = data_snapshot.get_snapshot().find_provider(None, provider_id, None)
    return [(provider, m) for m in provider.models]


@pytest.mark.parametrize("provider_id", PROVIDERS)
def test_every_model_prices_to_the_digit_what_genai_prices_says(provider_id):
    compared = 0
    for provider, model in models_of(provider_id):
        for usage in usages(hash(model.id) & 0xFFFF):
            try:
                want = model.calc_price(usage, provider, genai_request_timestamp=AT).total_price
            except Exception as e:
                with pytest.raises(type(e)) as got:
                    rates.total_price(model, provider, usage, AT)
                assert str(got.value) == str(e)
                continue
            got = rates.total_price(model, provider, usage, AT)
            assert got == want and str(got) == str(want), (model.id, usage)
            compared += 1
    assert compared > 0


def test_the_fast_path_is_what_runs():
    """Not the fallback every time: a plain usage never reaches genai-prices' calc_price."""
    provider, model = next((p, m) for p, m in models_of("openai") if m.id == "gpt-4o-mini")
    calls = []
    original = type(model).calc_price

    def counting(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    type(model).calc_price = counting
    try:
        assert rates.total_price(model, provider, Usage(input_tokens=24, output_tokens=9), AT) > 0
    finally:
        type(model).calc_price = original
    assert calls == []


def test_parts_larger_than_their_whole_are_refused_as_genai_prices_refuses_them():
    body = {"model": "gpt-4o-mini", "object": "chat.completion",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 50}}}
    priced = price_response("openai", body, path="/v1/chat/completions")
    assert priced.status == "unpriced"
    assert "cannot exceed" in priced.reason or "exceeds" in priced.reason


def test_a_price_in_micro_dollars_matches_the_direct_calculation():
    body = {"model": "gpt-4o-mini", "object": "chat.completion",
            "usage": {"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801,
                      "prompt_tokens_details": {"cached_tokens": 1000}}}
    priced = price_response("openai", body, path="/v1/chat/completions")
    provider, model = next((p, m) for p, m in models_of("openai") if m.id == "gpt-4o-mini")
    usage = Usage(input_tokens=1234, output_tokens=567, cache_read_tokens=1000)
    want = model.calc_price(usage, provider).total_price
    assert priced.cost == int((want * Decimal(1_000_000)).to_integral_value(rounding="ROUND_HALF_UP"))
