"""What a demo showed: bridge's events counted as they come, and the summary built from them.

`Tally` subscribes to the bridge's event bus; `summarize` turns it, the app's outcomes and
the budget report into one plain dict (the `--json` document); `lines` is its text form.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from bridge_cli.engine.events import BreakerEvent, BudgetEvent, DriftEvent, FlowEvent

PRICED = ("priced", "flat", "estimated")


@dataclass
class Tally:
    """Counts of bridge's events; `at` gives the seconds since the demo started."""

    at: object  # Callable[[], float]
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    upstreams: Counter = field(default_factory=Counter)
    cache: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    streamed: int = 0
    cost: Decimal = Decimal(0)
    breakers: list[dict] = field(default_factory=list)
    budget: list[dict] = field(default_factory=list)
    drift: list[dict] = field(default_factory=list)

    def __call__(self, event) -> None:
        """The bus subscriber."""
        when = round(self.at(), 1)
        if isinstance(event, FlowEvent):
            self._flow(event)
        elif isinstance(event, BreakerEvent):
            self.breakers.append({"at_s": when, "upstream": event.upstream, "from": event.old,
                                  "to": event.new, "reason": event.reason})
        elif isinstance(event, BudgetEvent):
            if event.what != "alert" and any(e["what"] == event.what for e in self.budget):
                return  # one refusal is news, the next hundred are the 402 count
            self.budget.append({"at_s": when, "what": event.what, "spent_usd": event.committed_usd,
                                "limit_usd": event.limit_usd})
        elif isinstance(event, DriftEvent):
            self.drift.append({"at_s": when, "endpoint": event.endpoint, "path": event.path,
                               "change": event.change, "severity": event.severity,
                               "before": event.before, "after": event.after})

    def _flow(self, event: FlowEvent) -> None:
        self.requests += 1
        self.statuses[str(event.status) if event.status is not None else "none"] += 1
        if event.upstream:
            self.upstreams[event.upstream] += 1
        if event.cache:
            self.cache[event.cache] += 1
        self.faults.update(event.faults)
        self.streamed += event.streamed
        if event.spend_status in PRICED and event.cost_usd is not None:
            self.cost += Decimal(event.cost_usd)


def summarize(tally: Tally, *, elapsed: float, stopped_early: bool, seed: int, rate: float,
              app: Counter, budget: dict | None, upstream_calls: dict[str, dict],
              home: str | None) -> dict:
    """The demo's summary: requests, breaker transitions, spend against the budget, cache
    and drift; `budget` is the route's entry of the control API's spend report."""
    lookups = sum(tally.cache.values())
    hits = tally.cache["hit"] + tally.cache["coalesced"]
    spent = budget["spent_usd"] if budget else f"{tally.cost:.6f}"
    return {
        "elapsed_s": round(elapsed, 1), "stopped_early": stopped_early, "seed": seed,
        "rate": rate,
        "requests": {"total": tally.requests, "by_status": dict(sorted(tally.statuses.items())),
                     "streamed": tally.streamed, "by_upstream": dict(tally.upstreams),
                     "app_saw": dict(sorted(app.items())), "upstream_calls": upstream_calls},
        "breakers": {"transitions": len(tally.breakers), "events": tally.breakers},
        "spend": {"spent_usd": spent, "limit_usd": budget["limit_usd"] if budget else None,
                  "used": budget["used"] if budget else None,
                  "refused": tally.statuses["402"], "alerts": tally.budget},
        "cache": {"hits": hits, "misses": tally.cache["miss"],
                  "hit_rate": round(hits / lookups, 3) if lookups else 0.0},
        "drift": {"findings": len(tally.drift), "events": tally.drift},
        "faults": dict(tally.faults),
        "home": home,
    }


def lines(s: dict) -> list[str]:
    """The summary as text, one fact a line."""
    r, sp, c = s["requests"], s["spend"], s["cache"]
    statuses = ", ".join(f"{k}: {v}" for k, v in r["by_status"].items()) or "none"
    used = f" ({sp['used']:.0%} of the budget)" if sp["used"] is not None else ""
    out = [f"bridge demo: {s['elapsed_s']:g} s at {s['rate']:g} requests/s, seed {s['seed']}"
           + (" (stopped early)" if s["stopped_early"] else ""),
           f"requests    {r['total']} ({r['streamed']} streamed) — {statuses}",
           "upstreams   answered " + (", ".join(f"{k} {v}" for k, v in r["by_upstream"].items())
                                      or "none") + "; calls they got: " + ", ".join(
               f"{k} {v['calls']} ({v['failed']} failed)" for k, v in r["upstream_calls"].items()),
           f"breakers    {s['breakers']['transitions']} transition(s)"]
    out += [f"  {e['at_s']:5.1f}s  {e['upstream']}: {e['from']} → {e['to']} ({e['reason']})"
            for e in s["breakers"]["events"]]
    out.append(f"spend       ${sp['spent_usd']} of ${sp['limit_usd']}{used}; "
               f"{sp['refused']} refused (402)")
    out += [f"  {e['at_s']:5.1f}s  budget {e['what']}: ${e['spent_usd']} of ${e['limit_usd']}"
            for e in sp["alerts"]]
    out.append(f"cache       {c['hits']} hit(s), {c['misses']} miss(es), "
               f"hit rate {c['hit_rate']:.0%}")
    out.append(f"drift       {s['drift']['findings']} finding(s)")
    out += [f"  {e['at_s']:5.1f}s  {e['severity']} {e['change']} at {e['path']} "
            f"({e['before']} → {e['after']}) in {e['endpoint']}" for e in s["drift"]["events"]]
    if s["faults"]:
        out.append("faults      " + ", ".join(f"{k} ×{v}" for k, v in s["faults"].items()))
    if s["home"]:
        out.append(f"kept        {s['home']} (BRIDGE_HOME={s['home']} bridge spend | drift)")
    return out
