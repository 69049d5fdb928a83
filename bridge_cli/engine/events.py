"""Events are data: one small dataclass per kind, published on one bus.

The flow log, the console printer of `bridge up`, the control API's counters and (later)
its event stream and the TUI all subscribe; no component formats another's output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("bridge.events")


@dataclass(frozen=True)
class TryRecord:
    """One try of a request at one upstream."""

    upstream: str
    outcome: str  # "ok" | status code as text ("503") | connect | reset | timeout | breaker_open
    status: int | None = None
    duration_ms: float = 0.0
    fault: str | None = None  # name of the injected fault that decided this try, if any


@dataclass(frozen=True)
class FlowEvent:
    """A finished request: what the client asked, what bridge did, what came back."""

    id: str
    ts: float  # wall-clock seconds since the epoch, when the request arrived
    route: str | None  # None: passed through the explicit proxy without a route
    method: str
    url: str  # already redacted
    status: int | None
    upstream: str | None
    duration_ms: float
    overhead_ms: float | None = None
    attempts: int = 0
    tries: tuple[TryRecord, ...] = ()
    error: str | None = None  # bridge's error type when bridge answered with one
    streamed: bool = False
    request_bytes: int = 0
    response_bytes: int = 0
    request_headers: tuple[tuple[str, str], ...] = ()  # already redacted
    faults: tuple[str, ...] = ()  # names of the injected faults that touched this request
    cache: str | None = None  # hit | miss | coalesced | replay (None: the cache wasn't asked)
    cost_usd: str | None = None  # what the call cost (decimal string), when the route prices it
    spend_status: str | None = None  # priced | flat | estimated | unpriced | saved
    drift: tuple[str, ...] = ()  # the schema changes this request's bodies showed, one line each
    kind: str = field(default="flow", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the flow log line and the control API's event). By hand, not
        dataclasses.asdict: this runs once per request and asdict deep-copies."""
        d = dict(self.__dict__)
        d["tries"] = [dict(t.__dict__) for t in self.tries]
        d["request_headers"] = [list(h) for h in self.request_headers]
        d["faults"] = list(self.faults)
        d["drift"] = list(self.drift)
        return d


@dataclass(frozen=True)
class NoticeEvent:
    """Something bridge itself wants the user to see (reload applied or refused, ...)."""

    level: str  # info | warning | error
    message: str
    kind: str = field(default="notice", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BreakerEvent:
    """A circuit breaker changed state."""

    route: str
    upstream: str
    old: str  # closed | open | half_open
    new: str
    reason: str
    kind: str = field(default="breaker", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BudgetEvent:
    """A budget reached its alert threshold, or refused (or, with `warn`, passed) a request."""

    scope: str  # "route:openai" or "global"
    what: str  # alert | exceeded
    committed_usd: str  # decimal string
    limit_usd: str
    action: str  # block | warn
    kind: str = field(default="budget_alert", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftEvent:
    """An upstream's (or the app's) JSON changed shape: one new finding (engine/drift.py)."""

    route: str
    endpoint: str  # 'GET /users/{id}', '... request', '... event:TYPE'
    path: str  # JSON path of the change
    change: str  # field_missing | type_changed | ... (Finding.kind)
    severity: str  # breaking | additive | loosening
    before: str | None
    after: str | None
    flow_id: str
    action: str  # warn | block
    kind: str = field(default="drift", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultEvent:
    """A fault was injected or cleared through the control API (or `bridge chaos`)."""

    name: str
    what: str  # injected | cleared
    route: str | None = None  # "*" for every route; None when cleared
    does: str | None = None  # the fault in words (engine/chaos.describe), when injected
    kind: str = field(default="fault", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = FlowEvent | NoticeEvent | BreakerEvent | BudgetEvent | DriftEvent | FaultEvent


class EventBus:
    """Synchronous fan-out; a subscriber that raises is logged and kept, never fatal."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def publish(self, event: Event) -> None:
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:  # a broken subscriber must not break the request path
                log.exception("event subscriber %r failed", fn)
