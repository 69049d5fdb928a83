"""The demo's script: when the outages and the drift come, the budget, and the config.

One route, `chat`, in front of two fake LLMs: `cloud` (the primary, down in scheduled
outages, so its breaker trips and recovers) and `local` (the fallback, steady but slow now
and then). The route caches, prices, budgets and learns drift; the config's fault schedule
adds a provider's 429 now and then and a slow fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge_cli.demo.upstreams import Outages

ROUTE = "chat"
MODEL = "gpt-4o"  # a model genai-prices knows: every call is priced at OpenAI's rates
INTERACTIVE_HORIZON = 60.0  # seconds: the dashboard shows the whole story within a minute
# What an uncached call costs on average (gpt-4o at $2.50 / $10 per million tokens, the
# traffic's ~850 prompt and ~100 completion tokens), for sizing the budget.
COST_PER_CALL_USD = 0.0032
BUDGET_HEADROOM = 1.25  # the limit over the spend expected by the horizon

@dataclass(frozen=True)
class Schedule:
    """When things happen: seconds from the start; the budget in USD."""

    outages: Outages  # of the primary, `cloud`
    drift_at: float  # both upstreams change their answer's shape
    open_for: float  # how long the breaker stays open
    budget_usd: float


def schedule(duration: float | None, rate: float, unique_share: float,
             repeated: int) -> Schedule:
    """The script of a demo that lasts `duration` seconds (None: until quit) at `rate`
    calls a second: `unique_share` of them new prompts, the rest `repeated` prompts that
    the cache answers after their first call."""
    horizon = INTERACTIVE_HORIZON if duration is None else duration
    outages = Outages(first=min(5.0, 0.15 * horizon),
                      down=min(6.0, max(2.5, 0.3 * horizon)), every=20.0)
    # The alert (50%) fires about 40% in; spend nears the limit by the horizon, and a demo
    # left running past it shows the budget refusing calls (402) before they leave.
    calls = rate * horizon
    priced = calls * unique_share + min(repeated, calls * (1 - unique_share))
    budget = round(max(0.01, priced * COST_PER_CALL_USD * BUDGET_HEADROOM), 2)
    return Schedule(outages=outages, drift_at=min(20.0, 0.4 * horizon),
                    open_for=2.0 if horizon < 20 else 3.0, budget_usd=budget)

def config_yaml(cloud_url: str, local_url: str, plan: Schedule, seed: int) -> str:
    """bridge's config for the demo: what `bridge demo` runs, and a readable example."""
    return f"""\
version: 2
control: {{listen: 127.0.0.1:0}}
routes:
  - name: {ROUTE}
    listen: 127.0.0.1:0
    strategy: fallback                 # cloud first; local when cloud fails or its breaker is open
    upstreams:
      - {{name: cloud, url: "{cloud_url}"}}
      - {{name: local, url: "{local_url}"}}
    timeout: {{connect: 2s, total: 15s}}
    retry:
      attempts: 1                      # one try per upstream: a failure moves to the next
      methods: [POST]
      on: [429, 500, 502, 503, 504, connect, reset, timeout]
    breaker: {{failure_rate: 50%, window: 10, min_calls: 5, open_for: {plan.open_for:g}s,
              half_open_calls: 1}}
    cache: {{ttl: 10m, methods: [POST]}}
    spend: {{provider: openai, inject_usage: true, default_max_tokens: 400}}
    budget: {{limit_usd: {plan.budget_usd:.2f}, period: day, alert_at: 50%, action: block}}
    drift: {{learn: true, action: warn}}
chaos:
  seed: {seed}
  faults:
    - {{name: rate-limited, route: {ROUTE}, stage: client, preset: openai-429, every: 20,
       for: 45s}}
    - {{name: slow-local, route: {ROUTE}, upstream: local, latency: 700ms, probability: 10%}}
"""
