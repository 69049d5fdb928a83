"""bridge's addons, one per step of a request, and the one place that orders them.

mitmproxy calls each hook of each addon in the order they were added, so the order is
part of the design:

1. RouteAddon        creates the flow's record (proxy/flowstate.py) and picks its route;
                     every later addon reads the route from the record.
2. HeaderFaultAddon  turns an allowed `x-bridge-fault` header into a fault for this request,
                     before the cache, which never serves or keeps a faulted request.
3. CacheAddon        may answer at once (hit, coalesced, replay): before any reservation is
                     made and before any upstream is called, so a hit is free. It declares
                     its stream observer (capture) for answers it will keep.
4. SpendAddon        notes the request's model and declares the usage observers of a
                     stream (asking an OpenAI stream for its usage); after the cache, so a
                     hit has none. In `response` it prices the answer and settles.
5. BudgetAddon       the guard: reserves the worst case against budgets before anything
                     leaves, or refuses (402); after the cache, so hits reserve nothing,
                     and after spend, whose usage request is part of the body sent.
5b. DriftAddon       learns and checks the JSON of routes with `drift:`: request bodies
                    and the stream reader here, before anything leaves; in `response`
                    after spend (a blocked answer was billed) and before keep (a blocked
                    answer is never cached), `action: block` answers a breaking change
                    with 502 schema_drift.
6. UpstreamAddon     the attempt loop; it hands the stream and the observers declared above
                     to the forwarder.
7. KeepAddon         keeps the complete answer the cache addon planned to keep (cache,
                     cassette) and releases requests that waited for it; a stream is kept
                     by its capture observer once the forwarder has sent it whole.
7b. PassthroughAddon answers pass-through flows whose host failed with bridge's JSON
                    error (its error hook sets the reply before RecordAddon publishes) and
                    says once per host that a client doesn't trust bridge's CA.
8. RecordAddon       last: publishes one FlowEvent with every decision made above,
                     including spend's price, which SpendAddon sets in its `response`.
"""

from __future__ import annotations

from bridge_cli.engine.cache import ReplayMode
from bridge_cli.engine.clock import Clock
from bridge_cli.engine.coalesce import InFlight
from bridge_cli.engine.events import EventBus
from bridge_cli.proxy.addons.budget import BudgetAddon
from bridge_cli.proxy.addons.cache import CacheAddon
from bridge_cli.proxy.addons.chaos import HeaderFaultAddon
from bridge_cli.proxy.addons.drift import DriftAddon
from bridge_cli.proxy.addons.keep import KeepAddon
from bridge_cli.proxy.addons.passthrough import PassthroughAddon
from bridge_cli.proxy.addons.record import RecordAddon
from bridge_cli.proxy.addons.route import RouteAddon
from bridge_cli.proxy.addons.spend import SpendAddon
from bridge_cli.proxy.addons.upstream import UpstreamAddon
from bridge_cli.proxy.cache_writer import CacheWriter
from bridge_cli.proxy.drift_keeper import DriftKeeper
from bridge_cli.proxy.forwarder import Forwarder
from bridge_cli.proxy.settler import Settler
from bridge_cli.proxy.state import LiveState
from bridge_cli.store.responses import ResponseStores


def bridge_addons(state: LiveState, bus: EventBus, forwarder: Forwarder,
                  responses: ResponseStores, clock: Clock, replay: ReplayMode,
                  settler: Settler, drift: DriftKeeper) -> list:
    """bridge's addons in the order mitmproxy must call them (see above)."""
    keep = KeepAddon(CacheWriter(responses, replay.cassette), InFlight(), clock)
    return [
        RouteAddon(state),
        HeaderFaultAddon(),
        CacheAddon(forwarder, responses, replay, keep, clock),
        SpendAddon(settler, clock),
        BudgetAddon(bus, settler),
        # before upstream: its request hook declares the stream reader; its response hook
        # runs after spend's (a blocked answer was billed) and before keep's (never cached)
        DriftAddon(bus, drift, clock.wall),
        UpstreamAddon(state, forwarder, clock),
        keep,
        PassthroughAddon(bus),  # before record: its error hook answers the flow
        RecordAddon(bus),
    ]
