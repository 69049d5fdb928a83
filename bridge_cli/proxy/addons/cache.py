"""Step 2 of a request: answer from the cache or a recording, share calls in flight, and
keep what the upstream answered (cache, `--record`). The decisions are engine/cache_plan.py's."""

from __future__ import annotations

import logging

from mitmproxy import http

from bridge_cli.common.entry import Entry
from bridge_cli.config.model import Route
from bridge_cli.engine import cache_plan as plans
from bridge_cli.engine.cache import ReplayMode, RequestView, age_seconds, split_path
from bridge_cli.engine.clock import Clock
from bridge_cli.errors import StoreError
from bridge_cli.proxy.addons.keep import KeepAddon, Pending
from bridge_cli.proxy.flowstate import FlowState, routed, state_of
from bridge_cli.proxy.forwarder import Forwarder, Handoff
from bridge_cli.proxy.outbound import UpstreamResponse, wants_stream
from bridge_cli.proxy.respond import apply_reply, respond
from bridge_cli.store.responses import ResponseStores

log = logging.getLogger("bridge.cache")


class CacheAddon:
    """Cache hits, coalescing of identical requests in flight, record and offline replay."""

    def __init__(self, forwarder: Forwarder, stores: ResponseStores, mode: ReplayMode,
                 keep: KeepAddon, clock: Clock) -> None:
        self.forwarder = forwarder
        self.stores = stores
        self.mode = mode
        self.keep = keep  # shares its writer and the calls in flight
        self.inflight = keep.inflight
        self.writer = keep.writer
        self.clock = clock  # TTLs and ages
    async def request(self, flow: http.HTTPFlow) -> None:
        if (got := routed(flow)) is None:
            st = state_of(flow)
            if self.mode.offline and st is not None and st.route is None and flow.live \
                    and not flow.response:
                apply_reply(flow, plans.unrouted_offline(flow.request.pretty_host))
            return
        st, route = got
        if st.faults.from_header and not self.mode.offline:
            return  # a faulted request is never answered from, or kept in, the cache
        if route.cache is None and not self.mode.record and not self.mode.offline:
            return  # nothing to plan (plan_request would say None): skip building the view
        plan = plans.plan_request(self._view(flow, route), route.cache, self.mode, route.name)
        if plan is None:
            return
        st.cache.status = plan.status
        pending = Pending(plan, route)
        if plan.lookup and await self._answered(flow, st, pending):
            return
        if self.mode.offline:
            self._offline(flow, st, pending)
        elif plan.keeps:
            self.keep.expect(st, pending)

    def _view(self, flow: http.HTTPFlow, route: Route) -> RequestView:
        path, query = split_path(flow.request.path)
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        is_proxy = not flow.client_conn.proxy_mode.full_spec.startswith("reverse:")
        namespace = route.cache.namespace if route.cache and route.cache.namespace else route.name
        return RequestView(namespace, flow.request.method, path, query, headers,
                           flow.request.raw_content or b"",
                           flow.request.pretty_host if is_proxy else None)

    async def _answered(self, flow: http.HTTPFlow, st: FlowState, pending: Pending) -> bool:
        """A hit, or the answer of an identical request in flight; else lead the next ones."""
        plan = pending.plan
        store = self.stores.cache(plan.view.namespace, plan.cache.max_size)
        entry = plans.lookup(store.get, plan, self.clock.wall(), stale_ok=self.mode.offline)
        if entry is not None:
            if plan.record_key and self.mode.records(pending.route.name):
                self.writer.submit([plans.recorded_hit(entry, plan)], plan.view.namespace, None)
            self._serve(flow, st, entry, "hit")
            return True
        key = plan.cache_key
        if key in self.inflight:
            shared = await self.inflight.follow(key)
            if shared is not None and flow.live and plans.same_variant(*shared, plan.view.headers):
                self._serve(flow, st, shared[0], "coalesced")
                return True
        elif not self.mode.offline:
            pending.leader = self.inflight.lead(key)
        return False

    def _offline(self, flow: http.HTTPFlow, st: FlowState, pending: Pending) -> None:
        cassette = self.stores.cassette(self.mode.cassette)
        entry = cassette.get(pending.plan.record_key)
        if entry is not None:
            self._serve(flow, st, entry, "replay")
            return
        try:
            recorded = [s["parts"] for _, s in cassette.summaries()]
        except StoreError as e:
            log.warning("could not read recordings: %s", e)
            recorded = []
        apply_reply(flow, plans.offline_miss(pending.plan, recorded, self.mode.cassette,
                                             pending.route.name))

    def _serve(self, flow: http.HTTPFlow, st: FlowState, entry: Entry, how: str) -> None:
        st.cache.status = how
        st.cache.served_body = entry.body  # spend prices what a hit saved from it
        headers = [*entry.headers, ("x-bridge-cache", how),
                   ("age", str(age_seconds(entry, self.clock.wall())))]
        up = UpstreamResponse(entry.status, headers, entry.body, raw=None)
        cache = st.route.cache
        pacing = bool(cache and cache.replay_pacing)
        is_stream = wants_stream(entry.status, {k.title(): v for k, v in entry.headers})
        events = entry.events if entry.events is not None and (pacing or is_stream) else None
        respond(flow, st, up, self.forwarder, Handoff(up, st.route.timeout.total,
                                                      events=events, pacing=pacing))
