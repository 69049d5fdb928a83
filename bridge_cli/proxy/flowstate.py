"""bridge's one typed record per request, kept on the flow as `flow.metadata["bridge"]`.

Each addon writes its own part and reads the others' typed fields; nothing is looked up by
a string key. The route addon creates the record; a flow without one is not bridge's.

    FlowState        who the request is, the config it runs on, its route, its error
      .cache         CachePart   the cache addon's plan and what it served
      .spend         SpendPart   the spend addon's reservation, usage and price
      .tries         TriesPart   the upstream addon's tries and time spent waiting
      .faults        FaultPart   faults from the request's header and faults that fired
      .stream        StreamPart  the hand-off to the forwarder and its declared observers
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from bridge_cli.config.model import Config, Route
from bridge_cli.engine.streams import StreamObserver

if TYPE_CHECKING:
    from bridge_cli.engine.budget import Reservation
    from bridge_cli.engine.chaos import ActiveFault
    from bridge_cli.engine.events import TryRecord
    from bridge_cli.engine.pricing import Priced, StreamUsage
    from bridge_cli.proxy.forwarder import Handoff

KEY = "bridge"


@dataclass
class CachePart:
    """Written by the cache addon."""

    status: str | None = None  # x-bridge-cache: hit | miss | refresh | coalesced | replay
    pending: Any = None  # what to keep once the answer is complete (addons/cache.Pending)
    served_body: bytes | None = None  # a stored answer served: spend prices what it saved


@dataclass
class SpendPart:
    """Written by the spend addon."""

    request_model: str | None = None  # the model the request names
    usage: StreamUsage | None = None  # reads a streamed answer's usage (a stream observer)
    strip_usage: bool = False  # bridge asked the stream for usage the client didn't ask for
    reservation: Reservation | None = None
    priced: Priced | None = None
    done: bool = False


@dataclass
class TriesPart:
    """Written by the upstream addon."""

    tries: tuple[TryRecord, ...] = ()
    attempts: int | None = None  # tries that reached (or were faulted as) an upstream
    upstream: str | None = None  # the upstream whose answer the client got
    waited_s: float = 0.0  # seconds waiting on upstreams, backoff and faults: not overhead


@dataclass
class FaultPart:
    """Faults of this request: from its `x-bridge-fault` header, and those that fired."""

    from_header: tuple[ActiveFault, ...] = ()
    fired: list[str] = field(default_factory=list)
    raw_cut: bool = False  # a client-stage fault cuts the stream: no in-band error

    def add(self, names: list[str]) -> None:
        self.fired.extend(n for n in names if n not in self.fired)


@dataclass
class StreamPart:
    """The answer's way to the client when it streams."""

    observers: list[StreamObserver] = field(default_factory=list)  # declared before the answer
    handoff: Handoff | None = None  # set once the answer goes through the forwarder
    streamed: bool = False


@dataclass
class FlowState:
    """Everything bridge knows and decided about one request."""

    id: str
    config: Config  # the config the request started on: a reload never changes it
    t0: float  # monotonic seconds at arrival
    ts: float  # epoch seconds at arrival
    method: str
    url: str  # as the client asked for it, before any retargeting
    request_bytes: int
    route: Route | None = None
    error: str | None = None  # bridge's own error type, when bridge answered with one
    sent_at: float | None = None  # pass-through: when mitmproxy took over
    published: bool = False
    cache: CachePart = field(default_factory=CachePart)
    spend: SpendPart = field(default_factory=SpendPart)
    tries: TriesPart = field(default_factory=TriesPart)
    faults: FaultPart = field(default_factory=FaultPart)
    stream: StreamPart = field(default_factory=StreamPart)
    drift: list[str] = field(default_factory=list)  # schema changes its bodies showed

    def overhead_ms(self) -> float:
        """Time bridge itself added so far: wall time minus time spent waiting on upstreams."""
        return max(0.0, (time.monotonic() - self.t0 - self.tries.waited_s) * 1000)

    def bridge_headers(self) -> list[tuple[str, str]]:
        """The x-bridge-* headers every routed response carries."""
        h = [("x-bridge-request-id", self.id)]
        if self.route is not None:
            h.append(("x-bridge-route", self.route.name))
        if self.tries.upstream:
            h.append(("x-bridge-upstream", self.tries.upstream))
        if self.tries.attempts is not None:
            h.append(("x-bridge-attempts", str(self.tries.attempts)))
        if self.faults.fired:
            h.append(("x-bridge-fault", ",".join(self.faults.fired)))
        if self.cache.status:
            h.append(("x-bridge-cache", self.cache.status))
        return h


def state_of(flow: http.HTTPFlow) -> FlowState | None:
    """bridge's record of this flow, or None for flows bridge never saw."""
    return flow.metadata.get(KEY)


def routed(flow: http.HTTPFlow) -> tuple[FlowState, Route] | None:
    """(record, route) of a live flow on a route that nothing has answered yet (no response,
    no hand-off to the forwarder); None when there's nothing to do."""
    if flow.response or flow.error or not flow.live:
        return None
    st = flow.metadata.get(KEY)
    if st is None or st.route is None or st.stream.handoff is not None:
        return None
    return st, st.route
