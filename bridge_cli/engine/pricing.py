"""What a call cost: usage from the response (whole or streamed), priced with genai-prices.

Money is integer micro-dollars everywhere in bridge. genai-prices (the Pydantic team's
maintained price data and usage extraction) does the provider-specific work; bridge adds
reading usage out of SSE streams, `pricing:` overrides from the config, and the worst-case
estimate a budget reserves before a request leaves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

import genai_prices
from genai_prices import Usage

from bridge_cli.common.jsondoc import json_object
from bridge_cli.config.model import Spend
from bridge_cli.engine.budget import Worst
from bridge_cli.engine.rates import total_price
from bridge_cli.engine.streams import REWRITE, StreamObserver, sse_events

MICROS = Decimal(1_000_000)
# genai-prices needs an API flavour for OpenAI; other providers have one shape.
FLAVOURED = {"openai"}


def to_micros(usd: Decimal | float | int) -> int:
    return int((Decimal(str(usd)) * MICROS).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@lru_cache(maxsize=1)
def snapshot_version() -> str:
    """Which price data priced a call (recorded beside each cost); read once, as reading
    package metadata costs more than pricing the call."""
    from importlib.metadata import version

    return f"genai-prices {version('genai-prices')}"


@dataclass(frozen=True)
class Priced:
    """The price of one call. `status`: priced | unpriced | flat | free."""

    cost: int  # micro-dollars
    status: str
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    reason: str | None = None  # why unpriced
    snapshot: str | None = None


def api_flavor(path: str) -> str:
    return "responses" if "/responses" in path else "chat"


def _override(pricing: tuple[dict, ...], provider: str, model: str) -> dict | None:
    for item in pricing:
        if item.get("provider", provider) != provider:
            continue
        match = item.get("match") or {}
        if item.get("id") == model or (
                "starts_with" in match and model.startswith(match["starts_with"])) or (
                "equals" in match and model == match["equals"]):
            return item.get("prices", {})
    return None


def _price_value(v: Any) -> Decimal:
    if isinstance(v, dict):  # tiered: price at the base tier
        v = v.get("base", 0)
    return Decimal(str(v or 0))


def price_with_override(usage: Usage, prices: dict) -> int:
    """Cost of `usage` at `pricing:` prices (USD per million tokens), micro-dollars."""
    cache_read = usage.reported_value("cache_read_tokens") or 0
    cache_write = usage.reported_value("cache_write_tokens") or 0
    uncached = max(0, (usage.reported_value("input_tokens") or 0) - cache_read - cache_write)
    usd = (uncached * _price_value(prices.get("input_mtok"))
           + cache_read * _price_value(prices.get("cache_read_mtok", prices.get("input_mtok")))
           + cache_write * _price_value(prices.get("cache_write_mtok", prices.get("input_mtok")))
           + (usage.reported_value("output_tokens") or 0) * _price_value(prices.get("output_mtok"))
           ) / MICROS
    usd += _price_value(prices.get("requests_kcount")) / 1000
    return to_micros(usd)


def price_response(provider: str, body: Any, *, path: str = "", request_model: str | None = None,
                   pricing: tuple[dict, ...] = ()) -> Priced:
    """Price a provider's JSON response (or the response-like object a stream rebuilt)."""
    if not isinstance(body, dict):
        return Priced(0, "unpriced", reason="the response is not a JSON object")
    flavour = api_flavor(path) if provider in FLAVOURED else "default"
    raw_model = body.get("model") or body.get("modelVersion") or request_model
    over = _override(pricing, provider, raw_model or "") if raw_model else None
    if over is not None:
        # A private or fine-tuned model: the provider's usage extractor alone (genai-prices'
        # extract_usage would fail looking the model up), priced at the config's prices.
        try:
            from genai_prices import data_snapshot

            prov = data_snapshot.get_snapshot().find_provider(None, provider, None)
            _, usage = prov.extract_usage(body, api_flavor=flavour)
        except Exception as e:
            return Priced(0, "unpriced", raw_model, reason=f"no usage in the response ({e})")
        tokens = {k: v for k, v in vars(usage).items() if isinstance(v, int)}
        return Priced(price_with_override(usage, over), "priced", raw_model, tokens,
                      snapshot="config pricing")
    kwargs = {"api_flavor": flavour} if provider in FLAVOURED else {}
    try:
        extracted = genai_prices.extract_usage(body, provider_id=provider, **kwargs)
    except Exception as e:  # genai-prices raises plain ValueErrors and lookups
        return Priced(0, "unpriced", raw_model, reason=f"no usage in the response ({e})")
    usage = extracted.usage
    tokens = {k: v for k, v in vars(usage).items() if isinstance(v, int)}
    # Reported as the response names it (claude-3-5-haiku-20241022), not as the price
    # list's entry that matched it (claude-3-5-haiku-latest); priced by that entry.
    raw_model = raw_model or (extracted.model.id if extracted.model else None)
    try:
        total = total_price(extracted.model, extracted.provider, usage) if extracted.model \
            else genai_prices.calc_price(usage, raw_model, provider_id=provider).total_price
    except Exception as e:
        return Priced(0, "unpriced", raw_model, tokens,
                      reason=f"no price for model {raw_model!r} ({e})")
    return Priced(to_micros(total), "priced", raw_model, tokens, snapshot=snapshot_version())


def billable(status: int, spend: Spend) -> bool:
    """Is an upstream answer with this status charged? Providers don't bill errors (4xx,
    5xx); a flat per-request price applies to every answer the upstream gave."""
    return spend.per_request_usd is not None or status < 400


def settled_price(priced: Priced, reserved: int | None) -> Priced:
    """What a call settles at: a call that ends without usage while a budget holds money
    for it settles at the reservation, marked estimated (never a silent zero)."""
    if reserved is not None and priced.status == "unpriced":
        return Priced(reserved, "estimated", priced.model, priced.usage, priced.reason,
                      priced.snapshot)
    return priced


def flat_price(spend: Spend, method: str) -> Priced:
    """`per_request_usd`: flat, or per method (methods not listed are free)."""
    p = spend.per_request_usd
    cost = p.get(method.upper(), 0) if isinstance(p, dict) else int(p or 0)
    return Priced(cost, "flat")


# --- usage from a stream ---------------------------------------------------------------------

def sse_data(chunk_text: str) -> list[Any]:
    """The JSON `data:` payloads of the complete SSE events in `chunk_text`."""
    return [doc for _, doc in sse_events(chunk_text)]


class StreamUsage(StreamObserver):
    """Rebuilds a response-like object with usage from a provider's SSE events:
    OpenAI's final chunk (`stream_options.include_usage`), the Responses API's
    `response.completed`, Anthropic's `message_start` + `message_delta`, Gemini's
    `usageMetadata`."""

    def __init__(self) -> None:
        self._buf = ""
        self.model: str | None = None
        self.usage: dict | None = None
        self.gemini: dict | None = None
        self.completed: dict | None = None

    def piece(self, data: bytes) -> bytes:
        """A stream observer: read each piece the upstream sent, pass it on unchanged."""
        self.feed(data)
        return data

    def feed(self, data: bytes) -> None:
        self._buf += data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        end = self._buf.rfind("\n\n")
        if end < 0:
            return
        complete, self._buf = self._buf[: end + 2], self._buf[end + 2 :]
        for obj in sse_data(complete):
            self._event(obj)

    def _event(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_start":  # Anthropic
            msg = obj.get("message") or {}
            self.model = msg.get("model", self.model)
            self.usage = dict(msg.get("usage") or {})
        elif kind == "message_delta":
            self.usage = {**(self.usage or {}), **{k: v for k, v in (obj.get("usage") or {}).items()
                                                   if v is not None}}
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            # OpenAI Responses API: an incomplete answer (max_output_tokens) is billed too
            if (obj.get("response") or {}).get("usage"):
                self.completed = obj.get("response")
        elif "usageMetadata" in obj:  # Gemini: the last chunk carries the totals
            self.gemini = obj
        else:
            self.model = obj.get("model", self.model)
            if obj.get("usage"):
                self.usage = obj["usage"]

    def response(self) -> dict | None:
        """A response-like dict to price, or None when the stream carried no usage."""
        if self._buf.strip():
            self.feed(b"\n\n")
        if self.completed is not None:
            return self.completed
        if self.gemini is not None:
            return self.gemini
        if self.usage:
            return {"model": self.model, "usage": self.usage,
                    **({"type": "message"} if "input_tokens" in self.usage else {})}
        return None


# --- the worst case a budget reserves --------------------------------------------------------

def _model_prices(provider: str, model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per token of a model, or None when genai-prices doesn't know it.
    Looked up once an hour per model (prices may change on a date): two genai-prices
    calculations cost more than bridge's whole share of a request."""
    return _hourly_prices(provider, model, int(time.time() // 3600))


@lru_cache(maxsize=1024)
def _hourly_prices(provider: str, model: str, _hour: int) -> tuple[Decimal, Decimal] | None:
    try:
        probe = genai_prices.calc_price(Usage(input_tokens=1_000_000, output_tokens=0), model,
                                        provider_id=provider)
        out = genai_prices.calc_price(Usage(input_tokens=0, output_tokens=1_000_000), model,
                                      provider_id=provider)
    except Exception:
        return None
    return probe.total_price / MICROS, out.total_price / MICROS


# Request fields that multiply what one call generates (and is billed for): OpenAI's `n`
# choices and `best_of` completions, Gemini's `candidateCount` (in generationConfig).
MULTIPLIERS = ("n", "best_of")
MAX_OUT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _count(v) -> int | None:
    """A token or choice count from a request body: a non-negative int (not a bool)."""
    return v if type(v) is int and v >= 0 else None


def _request_doc(body: bytes) -> dict:
    return json_object(body) or {}  # not JSON, nested past Python's limit: nothing to read


def worst_case(spend: Spend, method: str, body: bytes, pricing: tuple[dict, ...] = (),
               fallback_model: str | None = None) -> int:
    """Micro-dollars to reserve before forwarding (`estimate`'s amount)."""
    return estimate(spend, method, body, pricing, fallback_model).amount


def estimate(spend: Spend, method: str, body: bytes, pricing: tuple[dict, ...] = (),
             fallback_model: str | None = None) -> Worst:
    """The worst case to reserve: input estimated from the body's size (no tokenizer), plus
    max_tokens (or spend.default_max_tokens) at the model's output price, times every
    choice or candidate the request asks for. A field that is not a sane count (negative,
    a bool, a string) counts as absent: the default applies."""
    if spend.per_request_usd is not None:
        return Worst(flat_price(spend, method).cost)
    doc = _request_doc(body)
    model = doc.get("model") if isinstance(doc.get("model"), str) else fallback_model
    gen = doc.get("generationConfig") if isinstance(doc.get("generationConfig"), dict) else {}
    field_, max_out = next(((k, c) for k in MAX_OUT_KEYS if (c := _count(doc.get(k))) is not None),
                           (None, spend.default_max_tokens))
    if (c := _count(gen.get("maxOutputTokens"))) is not None:
        field_, max_out = "generationConfig.maxOutputTokens", c
    copies = max([1, *(c for k in MULTIPLIERS if (c := _count(doc.get(k))) is not None),
                  *(c for c in [_count(gen.get("candidateCount"))] if c is not None)])
    max_out *= copies
    input_tokens = len(body) // 3 + 1  # generous: ~4 bytes a token in English
    over = _override(pricing, spend.provider or "", model or "") if model else None
    if over is not None:
        return Worst(price_with_override(Usage(input_tokens=input_tokens, output_tokens=max_out),
                                         over), max_out, field_)
    prices = _model_prices(spend.provider or "", model) if model else None
    if prices is None:
        # An unknown model: price it as the provider's dearest known output, so a budget
        # is never undercut by a model the price list hasn't heard of.
        pin, pout = dearest(spend.provider or "")
        return Worst(to_micros(input_tokens * pin + max_out * pout), max_out, field_, True)
    pin, pout = prices
    return Worst(to_micros(input_tokens * pin + max_out * pout), max_out, field_)


def route_worst_case(spend: Spend, method: str, body_size: int) -> int:
    """The reservation for a request bridge could not read: the body's size as input and
    default_max_tokens as output, at the provider's dearest prices."""
    if spend.per_request_usd is not None:
        return flat_price(spend, method).cost
    pin, pout = dearest(spend.provider or "")
    return to_micros((body_size // 3 + 1) * pin + spend.default_max_tokens * pout)


_DEAREST: dict[str, tuple[Decimal, Decimal]] = {}


def _tier_max(v) -> Decimal:
    """The highest price a (possibly tiered) genai-prices price can reach, USD/MTok."""
    if v is None:
        return Decimal(0)
    if isinstance(v, (int, float, Decimal)):
        return Decimal(str(v))
    base = Decimal(str(getattr(v, "base", 0) or 0))
    tiers = [Decimal(str(getattr(t, "price", 0) or 0)) for t in getattr(v, "tiers", []) or []]
    return max([base, *tiers])


def dearest(provider: str) -> tuple[Decimal, Decimal]:
    """The highest input and output prices (USD per token) among a provider's models."""
    if provider not in _DEAREST:
        from genai_prices import data_snapshot

        best_in, best_out = Decimal("0.00002"), Decimal("0.0001")  # $20 / $100 per MTok floor
        try:
            snap = data_snapshot.get_snapshot()
            prov = next((p for p in snap.providers if p.id == provider), None)
            for m in (prov.models if prov else []):
                try:
                    variants = m.prices if isinstance(m.prices, list) else [m]
                    for v in variants:
                        pin = _tier_max(getattr(v.prices, "input_mtok", 0)) / MICROS
                        pout = _tier_max(getattr(v.prices, "output_mtok", 0)) / MICROS
                        best_in, best_out = max(best_in, pin), max(best_out, pout)
                except Exception:
                    continue  # one odd price entry must not end the scan
        except Exception:
            pass
        _DEAREST[provider] = (best_in, best_out)
    return _DEAREST[provider]


def _event_end(buf: bytes) -> int:
    """Index just past the first complete SSE event (blank line: LF, CRLF or CR), or -1."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r") if (i := buf.find(sep)) >= 0]
    return min(ends) if ends else -1


class UsageStripper(StreamObserver):
    """Drops the usage-only chunk (`"choices": []` with `usage`) from an OpenAI stream whose
    client didn't ask for it (bridge added `stream_options.include_usage` itself); keeps
    it in `removed`, for the cache to store beside the stream (a hit's savings)."""

    phase = REWRITE

    def __init__(self) -> None:
        self._buf = b""
        self.removed: list[bytes] = []

    def piece(self, piece: bytes) -> bytes:
        self._buf += piece
        out = []
        while (end := _event_end(self._buf)) >= 0:
            event, self._buf = self._buf[:end], self._buf[end:]
            (self.removed if self._usage_only(event) else out).append(event)
        return b"".join(out)

    __call__ = piece

    def end(self) -> bytes:
        """Whatever incomplete event is left at the end of the stream."""
        rest, self._buf = self._buf, b""
        return rest

    rest = end

    @staticmethod
    def _usage_only(event: bytes) -> bool:
        for obj in sse_data(event.decode("utf-8", "replace")):
            if isinstance(obj, dict) and obj.get("usage") and obj.get("choices") == []:
                return True
        return False
