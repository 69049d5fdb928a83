"""The running bridge as control/ sees it: control.view.BridgeView over a Bridge's live state."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge_cli.control.view import PROXY_LISTENER, Listener, RouteStats
from bridge_cli.engine.events import FaultEvent

if TYPE_CHECKING:
    from bridge_cli.common.store import Store
    from bridge_cli.config.model import Config, Fault
    from bridge_cli.proxy.runtime import Bridge
    from bridge_cli.store.responses import ResponseStores


class BridgeSnapshot:
    """Implements BridgeView: copies of the live state, never the live objects."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    @property
    def _state(self):
        return self._bridge.state

    @property
    def config(self) -> Config:
        return self._state.config

    @property
    def started_at(self) -> float:
        return self._state.started_at

    @property
    def control_url(self) -> str | None:
        control = self._bridge.control
        return control.url if control is not None else None

    @property
    def seed(self) -> int:
        return self._bridge.seed

    @property
    def store(self) -> Store:
        return self._bridge.store

    @property
    def responses(self) -> ResponseStores:
        return self._bridge.responses

    def listeners(self) -> list[Listener]:
        bound = self._state.bound
        names = [PROXY_LISTENER, *(r.name for r in self._state.config.routes)]
        return [Listener(n, "proxy" if n == PROXY_LISTENER else "reverse", *bound[n][:2])
                for n in names if n in bound]

    def route_stats(self, name: str) -> RouteStats:
        c = self._state.counters.get(name)  # .get: don't create counters by looking
        if c is None:
            return RouteStats()
        return RouteStats(
            requests=c.requests, errors=c.errors,
            statuses={str(k): v for k, v in sorted(c.by_status.items())},
            by_upstream=dict(c.by_upstream), cache=dict(c.cache), drift=dict(c.drift),
            p50_ms=c.percentile(0.5), p99_ms=c.percentile(0.99))

    def breakers(self, route: str) -> dict[str, dict]:
        rr = self._resilience(route)
        return {name: b.snapshot() for name, b in rr.breakers.items()} if rr else {}

    def retry_budget(self, route: str) -> dict | None:
        rr = self._resilience(route)
        return rr.budget.snapshot() if rr else None

    def _resilience(self, route: str):
        resilience = self._state.resilience
        return resilience.get(route) if resilience is not None else None

    def faults(self) -> list[dict]:
        return self._state.chaos.snapshot()

    def finished_faults(self) -> list[dict]:
        return self._state.chaos.finished_snapshot()

    def add_fault(self, fault: Fault) -> dict:
        chaos = self._state.chaos
        snapshot = chaos.add(fault, "api").snapshot(chaos.clock())
        self._bridge.bus.publish(FaultEvent(snapshot["name"], "injected", snapshot["route"],
                                            snapshot["does"]))
        return snapshot

    def remove_fault(self, name: str) -> bool:
        removed = self._state.chaos.remove(name)
        if removed:
            self._bridge.bus.publish(FaultEvent(name, "cleared"))
        return removed

    def clear_faults(self) -> list[str]:
        chaos = self._state.chaos
        names = list(chaos.faults)
        chaos.clear()
        for name in names:
            self._bridge.bus.publish(FaultEvent(name, "cleared"))
        return names

    def subscribe(self, fn: Callable[[object], None]) -> Callable[[], None]:
        return self._bridge.bus.subscribe(fn)

    def flow_detail(self, flow_id: str) -> dict | None:
        return self._bridge.details.get(flow_id)

    async def reload(self) -> dict:
        return (await self._bridge.reload()).to_dict()
