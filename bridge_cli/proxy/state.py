"""What the addons share while bridge runs: the live config, its listeners, counters.

A flow keeps the config it started with (its FlowState's `config`), so a reload
swaps `LiveState.config` without touching requests in flight.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import aiohttp

from bridge_cli.config.model import Config, Listen, Route
from bridge_cli.control.view import PROXY_LISTENER
from bridge_cli.engine.chaos import Chaos
from bridge_cli.engine.events import DriftEvent, EventBus, FlowEvent
from bridge_cli.engine.resilience import Resilience


def reverse_spec(listen: Listen) -> str:
    """mitmproxy mode for a route's reverse listener: the URL is a placeholder, bridge
    picks every try's upstream itself (DESIGN.md, "Listeners")."""
    return f"reverse:http://127.0.0.1:9@{listen.host}:{listen.port}"


def regular_spec(listen: Listen) -> str:
    return f"regular@{listen.host}:{listen.port}"


@dataclass
class RouteCounters:
    """Request counts and recent latencies of one route (or of pass-through traffic)."""

    requests: int = 0
    # Requests that ended in an error: a 5xx answer (the upstream's, or bridge's own), an
    # error bridge answered itself (unreachable, timeout, budget, ...), or no whole answer.
    errors: int = 0
    by_status: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    by_upstream: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=512))
    cache: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # hit, miss, ...
    drift: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # new findings by severity

    def add(self, event: FlowEvent) -> None:
        self.requests += 1
        if event.status is not None:
            self.by_status[event.status] += 1
        if event.error or event.status is None or event.status >= 500:
            self.errors += 1
        if event.upstream:
            self.by_upstream[event.upstream] += 1
        self.latencies_ms.append(event.duration_ms)
        if event.cache:
            self.cache[event.cache] += 1

    def percentile(self, q: float) -> float | None:
        """Latency percentile `q` (0..1) over the recent window, ms."""
        if not self.latencies_ms:
            return None
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


@dataclass
class LiveState:
    """Shared by every addon and the control API of one running bridge."""

    config: Config
    bus: EventBus
    session: aiohttp.ClientSession | None = None
    mode_routes: dict[str, str] = field(default_factory=dict)  # mode spec -> route name
    bound: dict[str, tuple[str, int]] = field(default_factory=dict)  # listener -> address
    counters: dict[str, RouteCounters] = field(default_factory=lambda: defaultdict(RouteCounters))
    started_at: float = field(default_factory=time.time)
    rng: random.Random = field(default_factory=random.Random)
    config_path: str | None = None
    resilience: Resilience | None = None
    chaos: Chaos | None = None
    inflight: int = 0  # requests routed and not yet finished (published)
    draining: bool = False  # shutting down: requests in flight finish, new ones are refused

    def on_event(self, event) -> None:
        if isinstance(event, FlowEvent):
            self.inflight -= 1
            self.counters[event.route or PROXY_LISTENER].add(event)
        elif isinstance(event, DriftEvent):
            self.counters[event.route].drift[event.severity] += 1

    def route_for_mode(self, spec: str, config: Config) -> Route | None:
        name = self.mode_routes.get(spec)
        return config.route(name) if name else None
