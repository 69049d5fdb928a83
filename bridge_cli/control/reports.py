"""Report builders shared by the control API and the CLI: one per resource."""

from __future__ import annotations

import os
import time

from bridge_cli import __version__
from bridge_cli.common.redact import redact_url
from bridge_cli.config.model import Route
from bridge_cli.control.view import PROXY_LISTENER, BridgeView


def status_report(view: BridgeView) -> dict:
    """GET /api/v1/status and `bridge status --json`: routes, listeners, upstreams, counts."""
    config = view.config
    listeners = view.listeners()
    bound = {lst.name: lst.address for lst in listeners}
    passthrough = view.route_stats(PROXY_LISTENER)
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - view.started_at, 1),
        "config": config.source,
        "control": view.control_url,
        "listeners": [{"name": lst.name, "kind": lst.kind, "address": lst.address}
                      for lst in listeners],
        "routes": [_route(view, route, bound.get(route.name)) for route in config.routes],
        "passthrough": {"requests": passthrough.requests, "errors": passthrough.errors},
    }


def _route(view: BridgeView, route: Route, address: str | None) -> dict:
    """One route of the status document."""
    stats = view.route_stats(route.name)
    breakers = view.breakers(route.name)
    return {
        "name": route.name,
        "listen": address,
        "match": {"host": route.match.host, "path": route.match.path} if route.match else None,
        "strategy": route.strategy,
        "upstreams": [
            {"name": u.name, "url": redact_url(u.url), "weight": u.weight,
             "requests": stats.by_upstream.get(u.name, 0), "breaker": breakers.get(u.name)}
            for u in route.upstreams
        ],
        "retry_budget": view.retry_budget(route.name),
        "cache": dict(stats.cache),
        "drift": dict(stats.drift),  # findings raised since start, by severity (bridge drift)
        "requests": stats.requests,
        "errors": stats.errors,
        "statuses": dict(stats.statuses),
        "latency_ms": {"p50": stats.p50_ms, "p99": stats.p99_ms},
    }


def faults_report(view: BridgeView) -> dict:
    """GET /api/v1/faults and `bridge chaos list --json`: active faults, hits, time left."""
    return {"seed": view.seed, "allow_headers": view.config.chaos.allow_headers,
            "faults": view.faults(), "finished": view.finished_faults()}
