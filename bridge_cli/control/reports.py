"""Report builders shared by the control API and the CLI: one per resource."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from bridge_cli import __version__
from bridge_cli.engine.redact import redact_url
from bridge_cli.proxy.state import PROXY_LISTENER

if TYPE_CHECKING:
    from bridge_cli.proxy.runtime import Bridge


def _address(addr: tuple[str, int] | None) -> str | None:
    return f"{addr[0]}:{addr[1]}" if addr else None


def status_report(bridge: Bridge) -> dict:
    """GET /api/v1/status and `bridge status --json`: routes, listeners, upstreams, counts."""
    state = bridge.state
    config = state.config
    listeners = []
    if PROXY_LISTENER in state.bound:
        listeners.append({"name": PROXY_LISTENER, "kind": "proxy",
                          "address": _address(state.bound[PROXY_LISTENER])})
    routes = []
    for route in config.routes:
        c = state.counters.get(route.name)
        rr = state.resilience.get(route.name) if state.resilience else None
        addr = _address(state.bound.get(route.name))
        if addr:
            listeners.append({"name": route.name, "kind": "reverse", "address": addr})
        routes.append({
            "name": route.name,
            "listen": addr,
            "match": {"host": route.match.host, "path": route.match.path} if route.match else None,
            "strategy": route.strategy,
            "upstreams": [
                {"name": u.name, "url": redact_url(u.url), "weight": u.weight,
                 "requests": c.by_upstream.get(u.name, 0) if c else 0,
                 "breaker": rr.breakers[u.name].snapshot() if rr and u.name in rr.breakers
                 else None}
                for u in route.upstreams
            ],
            "retry_budget": rr.budget.snapshot() if rr else None,
            "cache": dict(c.cache) if c else {},
            "requests": c.requests if c else 0,
            "errors": c.errors if c else 0,
            "statuses": {str(k): v for k, v in sorted(c.by_status.items())} if c else {},
            "latency_ms": {"p50": c.percentile(0.5), "p99": c.percentile(0.99)} if c else
                          {"p50": None, "p99": None},
        })
    passthrough = state.counters.get(PROXY_LISTENER)
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - state.started_at, 1),
        "config": config.source,
        "control": bridge.control.url if bridge.control else None,
        "listeners": listeners,
        "routes": routes,
        "passthrough": {"requests": passthrough.requests if passthrough else 0,
                        "errors": passthrough.errors if passthrough else 0},
    }


def faults_report(bridge: Bridge) -> dict:
    """GET /api/v1/faults and `bridge chaos list --json`: active faults, hits, time left."""
    chaos = bridge.state.chaos
    return {"seed": chaos.seed, "allow_headers": bridge.state.config.chaos.allow_headers,
            "faults": chaos.snapshot(), "finished": chaos.finished_snapshot()}
