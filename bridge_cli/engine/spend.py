"""Spend decisions for one request: what it names, what it may reserve, what it cost.

proxy/addons/spend.py gathers the facts of a flow into `SpendFacts` and applies what these
functions return; pricing itself is engine/pricing.py's, budgets engine/budget.py's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge_cli.common.jsondoc import json_object
from bridge_cli.common.redact import redact_url
from bridge_cli.config.model import Budget, Config, Route, Spend
from bridge_cli.engine.pricing import (
    Priced,
    StreamUsage,
    billable,
    flat_price,
    price_response,
    settled_price,
)

FREE = ("hit", "coalesced", "replay")  # cache statuses that cost nothing


def budgets_of(route: Route, config: Config) -> list[tuple[str, Budget]]:
    """The budgets a request on `route` reserves against: the route's, then the global one."""
    out = []
    if route.budget is not None:
        out.append((f"route:{route.name}", route.budget))
    if config.budget is not None:
        out.append(("global", config.budget))
    return out


def request_model(path: str, body: bytes) -> str | None:
    """The model the request names: its JSON `model`, or Gemini's `/models/NAME:...` path."""
    path = path.split("?")[0]
    if "/models/" in path:
        return path.split("/models/", 1)[1].split(":", 1)[0].split("/", 1)[0] or None
    model = (json_object(body) or {}).get("model")
    return model if isinstance(model, str) else None


def with_usage_requested(body: bytes) -> bytes | None:
    """An OpenAI streaming request body that also asks for usage, or None when it is not a
    stream or already asks (then nothing needs stripping either)."""
    doc = json_object(body)
    if doc is None or doc.get("stream") is not True:
        return None
    opts = doc.get("stream_options") or {}
    if not isinstance(opts, dict):
        return None  # the provider refuses such a request; bridge leaves it as it is
    if opts.get("include_usage"):
        return None
    doc["stream_options"] = {**opts, "include_usage": True}
    return json.dumps(doc).encode()


@dataclass
class SpendFacts:
    """What happened to one request, as far as its price is concerned."""

    method: str
    url: str  # the client's URL (its path tells the API flavour)
    cache: str | None  # x-bridge-cache status
    error: str | None  # bridge's own error type
    status: int | None  # the answer's status; None when there was none
    faulted_without_upstream: bool  # a fault answered and no upstream did
    streamed: bool
    stream_usage: StreamUsage | None  # what the stream carried
    served_body: bytes | None  # a stored answer that was served (cache hit, replay)
    body: Any  # the answer's JSON body, when buffered
    request_model: str | None


def price_flow(spend: Spend, pricing: tuple[dict, ...], facts: SpendFacts) -> Priced:
    """What the request cost: free, saved (a cache hit's would-be cost), or priced."""
    if facts.cache in FREE:  # free, and what it would have cost is a saving
        would = _price_answer(spend, pricing, facts)
        return Priced(0, "saved", would.model, would.usage, reason=str(would.cost))
    if facts.error or facts.status is None or facts.faulted_without_upstream:
        return Priced(0, "free", reason=facts.error or "no upstream answer")
    if not billable(facts.status, spend):
        return Priced(0, "free", reason=f"the upstream answered {facts.status}")
    return _price_answer(spend, pricing, facts)


def _price_answer(spend: Spend, pricing: tuple[dict, ...], facts: SpendFacts) -> Priced:
    if spend.per_request_usd is not None:
        return flat_price(spend, facts.method)
    if facts.served_body is not None:  # a cache hit or replay: price the stored answer
        body = stored_body(facts.served_body)
    elif facts.streamed:
        body = facts.stream_usage.response() if facts.stream_usage is not None else None
        if body is None:
            return Priced(0, "unpriced", reason="the stream carried no usage (set "
                          "spend.inject_usage, or ask for stream_options.include_usage)")
    else:
        body = facts.body
    return price_response(spend.provider, body, path=facts.url, pricing=pricing,
                          request_model=facts.request_model)


def stored_body(served: bytes) -> Any:
    """The response-like JSON of a stored answer: its body, or its stream's usage."""
    if served.lstrip()[:1] in (b"{", b"["):
        try:
            return json.loads(served)
        except (ValueError, RecursionError):
            return None
    su = StreamUsage()
    su.feed(served)
    return su.response()


def settle(priced: Priced, reserved: int | None) -> Priced:
    """The price to record: a call that ended without usage settles at its reservation."""
    return settled_price(priced, reserved)


def ledger_row(now: float, flow_id: str, route: str, upstream: str | None, priced: Priced,
               path: str, held: tuple[str, ...] = ()) -> dict | None:
    """The ledger's row for a priced request; None when there is nothing to record. `held`:
    the budget scopes that held money for it (they count it; a budget configured later
    counts only the calls no budget of its scope held, engine/budget.recorded_in)."""
    status = priced.status
    saved = int(priced.reason) if status == "saved" and (priced.reason or "").isdigit() else 0
    if status == "free" and not saved:
        return None
    return {"ts": now, "id": flow_id, "route": route, "upstream": upstream,
            "model": priced.model, "cost_micros": priced.cost if status != "saved" else 0,
            "saved_micros": saved, "status": status,
            "reason": priced.reason if status != "saved" else None, "tokens": priced.usage,
            "snapshot": priced.snapshot, "path": redact_url(path.split("?")[0]),
            **({"budgets": list(held)} if held else {})}
