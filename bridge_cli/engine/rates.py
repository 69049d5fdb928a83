"""A model's prices, prepared once: the same total genai-prices computes, without redoing
per call the work that depends only on the model's price list.

genai-prices' `ModelPrice.calc_price` resolves the price list against its unit registry,
validates it, sorts the priced units and finds which is part of which (for example cached
input tokens are part of input tokens) on every call: about 60 us, more than half of what
bridge spent on a whole request with spend on. None of that depends on the usage, so
`total_price` does it once per price list (`Shape`) and per call does only what the usage
decides: the leaf counts (each unit's count less its priced parts) and the sum, in the
same order and with the same Decimal operations, hence to the last digit the same total.

Anything unusual goes to genai-prices itself (`fallback`): a usage whose parts exceed their
whole (genai-prices raises with its own message), a provider with special rules (Groq's
Whisper minimum), a library version whose internals moved. tests/test_rates.py compares
the two over every model of the providers bridge prices.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

log = logging.getLogger("bridge.spend")
MAX_SHAPES = 512  # price lists kept prepared (a snapshot holds a few thousand, a bridge uses few)

try:  # genai-prices internals, pinned by pyproject's version range; gone means fallback
    from genai_prices._usage import subtract_usage_values
    from genai_prices.decompose import is_descendant_or_self
    from genai_prices.types import (
        TieredPrices,
        Usage,
        _collect_resolved_model_prices,
        calc_unit_price,
    )
    from genai_prices.units import _get_registry
    from genai_prices.validation import validate_priced_units
    AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installed genai-prices
    AVAILABLE = False


class Fallback(Exception):
    """This call is for genai-prices' own calc_price."""


class Shape:
    """What one price list's calculation needs that the usage does not change."""

    def __init__(self, model_price: Any) -> None:
        registry = _get_registry()
        self.model_price = model_price  # kept alive: shapes are found by its id()
        self.resolved = _collect_resolved_model_prices(model_price, registry)
        validate_priced_units(tuple(unit for unit, _ in self.resolved), registry)
        self.tiered = any(isinstance(price, TieredPrices) for _, price in self.resolved)
        by_key = {unit.usage_key: unit for unit, _ in self.resolved if unit.usage_key != "requests"}
        order = sorted(by_key.values(), key=lambda unit: (-len(unit.dimensions), unit.usage_key))
        # each priced unit with the priced units that are part of it, most specific first
        self.leaves = tuple(
            (unit.usage_key, tuple(d.usage_key for d in order
                                   if d is not unit and is_descendant_or_self(unit, d)))
            for unit in order)
        self.requests = any(unit.usage_key == "requests" for unit, _ in self.resolved)
        self.terms = tuple((price, unit.usage_key, unit.per) for unit, price in self.resolved)

    def total(self, usage: Any) -> Decimal:
        usage = Usage.from_raw(usage)
        reported = usage._reported_values()
        positive: frozenset[str] | None = None
        counts: dict[str, Any] = {}
        for key, parts in self.leaves:
            raw = reported.get(key)
            if raw is None:
                if positive is None:
                    positive = frozenset(k for k, v in reported.items() if v > 0)
                raw = _missing(usage, key, positive)
            leaf = subtract_usage_values(raw, (counts[p] for p in parts))
            if leaf < 0:
                raise Fallback  # genai-prices explains which count is wrong
            counts[key] = leaf
        if self.requests:
            counts["requests"] = 1
        total_input = usage.input_tokens if self.tiered else 0
        total = Decimal(0)
        for price, key, per in self.terms:
            total += calc_unit_price(price, counts[key], total_input, per)
        return total


_shapes: dict[int, Shape] = {}
# (usage key, the keys reported above 0) -> whether genai-prices reads the missing key as 0
# (it does unless reported parts of it imply a total that was not given, which it refuses)
_absent: dict[tuple[str, frozenset[str]], bool] = {}


def _missing(usage: Any, key: str, positive: frozenset[str]) -> Any:
    """The value genai-prices gives a usage key that was not reported: 0, or Fallback where
    it raises (so that its own error explains the usage)."""
    zero = _absent.get((key, positive))
    if zero is None:
        try:
            zero = getattr(usage, key) == 0
        except ValueError:
            zero = False
        if len(_absent) >= MAX_SHAPES:
            _absent.clear()
        _absent[(key, positive)] = zero
    if not zero:
        raise Fallback
    return 0


def shape_of(model_price: Any) -> Shape:
    shape = _shapes.get(id(model_price))
    if shape is None or shape.model_price is not model_price:
        if len(_shapes) >= MAX_SHAPES:
            _shapes.clear()
        shape = _shapes[id(model_price)] = Shape(model_price)
    return shape


def total_price(model: Any, provider: Any, usage: Any, at: datetime | None = None) -> Decimal:
    """What genai-prices' `model.calc_price(usage, provider).total_price` says (USD)."""
    at = at or datetime.now(tz=UTC)
    if AVAILABLE and provider.id != "groq":
        try:
            return shape_of(model.get_prices(at)).total(usage)
        except Fallback:
            pass
        except Exception as e:  # a genai-prices whose internals changed: the slow path
            log.debug("fast pricing of %s failed (%s); genai-prices prices it", model.id, e)
    return model.calc_price(usage, provider, genai_request_timestamp=at).total_price
