"""The one narrow view control/ and cli/ have of a running bridge: plain data in and out.
proxy/snapshot.py implements it; control/ builds every document from it alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge_cli.common.store import Store
    from bridge_cli.config.model import Config, Fault
    from bridge_cli.store.responses import ResponseStores

PROXY_LISTENER = "proxy"  # the explicit proxy's name in listener tables and counters


@dataclass(frozen=True)
class Listener:
    """One bound listener: a route's reverse port, or the explicit proxy."""

    name: str  # route name, or PROXY_LISTENER
    kind: str  # "reverse" | "proxy"
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RouteStats:
    """Live counts of one route (or of pass-through traffic); latencies in ms."""

    requests: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # "200" -> count, sorted
    by_upstream: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)  # hit, miss, ...
    drift: dict[str, int] = field(default_factory=dict)  # new drift findings by severity
    p50_ms: float | None = None
    p99_ms: float | None = None


class BridgeView(Protocol):
    """What control/ and cli/ may see of and do to a running bridge."""

    @property
    def config(self) -> Config:
        """The config serving new requests now."""
        ...

    @property
    def started_at(self) -> float:
        """Wall-clock time the bridge started, seconds since the epoch."""
        ...

    @property
    def control_url(self) -> str | None:
        """The control API's bound URL, once it serves."""
        ...

    @property
    def seed(self) -> int:
        """The seed of every chaos probability draw."""
        ...

    @property
    def store(self) -> Store:
        """The state store (spend, budgets, breakers)."""
        ...

    @property
    def responses(self) -> ResponseStores:
        """The response caches and cassettes."""
        ...

    def listeners(self) -> list[Listener]:
        """Bound listeners: the explicit proxy first, then routes in config order."""
        ...

    def route_stats(self, name: str) -> RouteStats:
        """Counts of route `name` (PROXY_LISTENER: pass-through traffic); zeros if none."""
        ...

    def breakers(self, route: str) -> dict[str, dict]:
        """Upstream name -> breaker snapshot, for the upstreams of `route` with a breaker."""
        ...

    def retry_budget(self, route: str) -> dict | None:
        """The retry budget's snapshot of `route`, None when the route has no state yet."""
        ...

    def faults(self) -> list[dict]:
        """Snapshots of the active faults."""
        ...

    def finished_faults(self) -> list[dict]:
        """Snapshots of faults that ran out (count reached, `for` over)."""
        ...

    def add_fault(self, fault: Fault) -> dict:
        """Start applying `fault` (replacing one of the same name); its snapshot."""
        ...

    def remove_fault(self, name: str) -> bool:
        """Stop fault `name`; False when no active fault has that name."""
        ...

    def clear_faults(self) -> list[str]:
        """Stop every active fault; the names removed."""
        ...

    def subscribe(self, fn: Callable[[object], None]) -> Callable[[], None]:
        """Call `fn` with every event the bridge publishes (engine/events.py), on its loop;
        returns a function that stops it."""
        ...

    def flow_detail(self, flow_id: str) -> dict | None:
        """A recent flow in full (summary, redacted headers, capped bodies); None when it
        is not kept (any more)."""
        ...

    async def reload(self) -> dict:
        """Re-read the config file: {"applied": bool, "message": str}."""
        ...
