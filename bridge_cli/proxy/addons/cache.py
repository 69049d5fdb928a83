"""Step 2 of a request: answer from the cache or a recording, share calls in flight, and
keep what the upstream answered (cache, `--record`). Policy lives in engine/cache.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field

from mitmproxy import http

from bridge_cli.config.model import Cache, Route
from bridge_cli.engine.cache import (
    Entry,
    ReplayMode,
    RequestView,
    age_seconds,
    closest,
    is_fresh,
    key_of,
    key_parts,
    make_entry,
    request_policy,
    response_storable,
    split_path,
    vary_record,
    with_upstream_vary,
)
from bridge_cli.engine.replies import error_reply
from bridge_cli.errors import StoreError
from bridge_cli.proxy.flowmeta import apply_reply, meta, route_of
from bridge_cli.proxy.forwarder import Forwarder, Handoff
from bridge_cli.proxy.outbound import UpstreamResponse, wants_stream
from bridge_cli.proxy.respond import respond
from bridge_cli.proxy.state import LiveState
from bridge_cli.store.responses import EntryStore, ResponseStores

log = logging.getLogger("bridge.cache")
RECORD_ALL = Cache(ttl=0, methods=("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
COALESCE_WAIT = 600.0  # seconds a follower waits for the leader's answer at most


@dataclass
class Pending:
    """What to keep once this flow's answer is complete."""

    route: Route
    view: RequestView
    cache_key: str | None = None
    cache_parts: dict | None = None
    record_key: str | None = None
    record_parts: dict | None = None
    leader: asyncio.Future | None = None
    coalesce_key: str | None = None
    done: bool = field(default=False)


def namespace_of(route: Route) -> str:
    return (route.cache.namespace if route.cache and route.cache.namespace else route.name)


class CacheAddon:
    """Cache hits, coalescing of identical requests in flight, record and offline replay."""

    def __init__(self, state: LiveState, forwarder: Forwarder, stores: ResponseStores,
                 mode: ReplayMode) -> None:
        self.state = state
        self.forwarder = forwarder
        self.stores = stores
        self.mode = mode
        self.inflight: dict[str, asyncio.Future] = {}
        # One writer thread: writes of the same key land in the order they were made.
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bridge-cache")

    # --- request ---------------------------------------------------------------------
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        m = meta(flow)
        route = route_of(flow)
        if route is None:
            if self.mode.offline and m is not None:
                apply_reply(flow, error_reply(
                    "offline_miss", "bridge is offline: only routes' recordings and cache are "
                    f"served, and {flow.request.pretty_host} matches no route"))
            return
        if m.get("header_faults"):
            return  # a faulted request is never answered from, or kept in, the cache
        if route.cache is None and not self.mode.record and not self.mode.offline:
            return
        path, query = split_path(flow.request.path)
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        is_proxy = not flow.client_conn.proxy_mode.full_spec.startswith("reverse:")
        view = RequestView(namespace_of(route), flow.request.method, path, query, headers,
                           flow.request.raw_content or b"",
                           flow.request.pretty_host if is_proxy else None)
        pending = Pending(route, view)
        cache = route.cache
        policy = request_policy(view.method, headers, cache) if cache else None

        if cache is not None and policy.store:
            pending.cache_parts = key_parts(view, cache)
            pending.cache_key = key_of(pending.cache_parts)
            m["cache"] = "refresh"  # stays so when the client asked for a refetch
        if self.mode.records(route.name) or self.mode.offline:
            pending.record_parts = key_parts(view, cache or RECORD_ALL, credentials=False)
            pending.record_key = key_of(pending.record_parts)
        if cache is not None and policy.lookup:
            m["cache"] = "miss"
            entry = await self._lookup(cache, view, pending.cache_key, stale_ok=self.mode.offline)
            if entry is not None:
                if pending.record_key and self.mode.records(route.name):
                    self._record_hit(entry, pending)  # --record keeps hits too
                self._serve(flow, m, entry, "hit", route)
                return
            key = pending.cache_key
            if key in self.inflight:  # an identical request is on its way: share its answer
                try:
                    shared, leader_headers = await asyncio.wait_for(
                        asyncio.shield(self.inflight[key]), COALESCE_WAIT)
                except TimeoutError:
                    shared, leader_headers = None, {}
                if shared is not None and flow.live and _same_variant(shared, leader_headers,
                                                                      view.headers):
                    self._serve(flow, m, shared, "coalesced", route)
                    return
            elif not self.mode.offline:
                pending.leader = self.inflight[key] = asyncio.get_running_loop().create_future()
                pending.coalesce_key = key

        if self.mode.offline:
            self._offline(flow, m, route, pending)
            return
        if pending.cache_key or pending.record_key:
            m["pending_cache"] = pending
            m["capture"] = lambda pieces, f=flow: self._captured(f, pieces)

    async def _lookup(self, cache: Cache, view: RequestView, key: str, *,
                      stale_ok: bool) -> Entry | None:
        store = self.stores.cache(view.namespace, cache.max_size)
        entry = store.get(key)
        if entry is not None and entry.vary is not None:  # the upstream said Vary
            entry = store.get(key_of(with_upstream_vary(entry.parts, entry.vary, view.headers)))
        if entry is None:
            return None
        if not stale_ok and not is_fresh(entry, cache.ttl, time.time()):
            return None
        return entry

    def _record_hit(self, entry: Entry, pending: Pending) -> None:
        recorded = make_entry(entry.status, entry.headers, entry.body, entry.stored_at,
                              pending.record_parts, entry.route, entry.events)
        store = self.stores.cassette(self.mode.cassette)
        writes = [(store, pending.record_key, recorded, None)]
        store.unwritten[pending.record_key] = recorded
        done = asyncio.get_running_loop().run_in_executor(self.writer, _write_all, writes)
        done.add_done_callback(lambda _: _written(writes))

    def _offline(self, flow: http.HTTPFlow, m: dict, route: Route, pending: Pending) -> None:
        cassette = self.stores.cassette(self.mode.cassette)
        entry = cassette.get(pending.record_key)
        if entry is not None:
            self._serve(flow, m, entry, "replay", route)
            return
        wanted = pending.record_parts
        candidates = [s["parts"] for _, s in _safe_summaries(cassette)]
        near, diff = closest(wanted, candidates)
        detail = {"key": {k: v for k, v in wanted.items() if k != "credentials"},
                  "cassette": self.mode.cassette}
        if near is not None:
            detail["closest"] = {k: v for k, v in near.items() if k != "credentials"}
            detail["differences"] = diff
            why = "; the closest recording differs: " + "; ".join(diff)
        else:
            why = f"; cassette '{self.mode.cassette}' has nothing for route '{route.name}'"
        apply_reply(flow, error_reply(
            "offline_miss",
            f"offline: no recording of {wanted['method']} {wanted['path']}{why}", extra=detail))

    def _serve(self, flow: http.HTTPFlow, m: dict, entry: Entry, how: str, route: Route) -> None:
        m["cache"] = how
        m["served_body"] = entry.body  # spend prices what a hit saved from it
        headers = [*entry.headers, ("x-bridge-cache", how),
                   ("age", str(age_seconds(entry, time.time())))]
        up = UpstreamResponse(entry.status, headers, entry.body, raw=None)
        pacing = bool(route.cache and route.cache.replay_pacing)
        respond(flow, m, up, self.forwarder, Handoff(
            up, route.timeout.total, events=entry.events if entry.events is not None and (
                pacing or _is_stream(entry)) else None, pacing=pacing))

    # --- completion ------------------------------------------------------------------
    def response(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        pending: Pending | None = m.get("pending_cache") if m else None
        if pending is None or pending.done:
            return
        if m.get("handoff") is not None:
            self._after_stream(m["handoff"], pending)
            return
        if flow.response is None or flow.response.stream:
            self._settle(pending, None)  # nothing complete to keep
            return
        r = flow.response
        self._keep(m, pending, r.status_code, list(r.headers.items(multi=True)),
                   r.raw_content or b"", None)

    def error(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        pending = m.get("pending_cache") if m else None
        if pending is not None and not pending.done:
            if m.get("handoff") is not None:
                self._after_stream(m["handoff"], pending)  # the forwarder may still keep it
            else:
                self._settle(pending, None)

    def _after_stream(self, handoff: Handoff, pending: Pending) -> None:
        """A stream's fate is the forwarder's to tell (it captures a complete one, even
        after the client left); settle what it didn't keep once it is done."""
        async def wait() -> None:
            await handoff.done.wait()
            if not pending.done:
                self._settle(pending, None)

        if handoff.done.is_set():
            if not pending.done:
                self._settle(pending, None)
        else:
            asyncio.ensure_future(wait())

    def _captured(self, flow: http.HTTPFlow, pieces: list[tuple[float, bytes]]) -> None:
        m = meta(flow)
        pending: Pending | None = m.get("pending_cache")
        handoff = m.get("handoff")
        if pending is None or pending.done or handoff is None:
            return
        up = handoff.response
        self._keep(m, pending, up.status, up.headers, b"".join(p for _, p in pieces), pieces)

    def _keep(self, m: dict, pending: Pending, status: int, headers: list[tuple[str, str]],
              body: bytes, events: list[tuple[float, bytes]] | None) -> None:
        if m.get("faults") or m.get("error"):
            self._settle(pending, None)  # faulted or bridge's own error: never kept, never shared
            return
        now = time.time()
        lower = {k.lower(): v for k, v in headers}
        route, cache = pending.route, pending.route.cache
        writes = []
        entry = make_entry(status, headers, body, now, pending.cache_parts or {}, route.name,
                           events)
        if pending.cache_key and response_storable(status, lower, cache):
            store = self.stores.cache(pending.view.namespace, cache.max_size)
            vary = [v.strip().lower() for v in lower.get("vary", "").split(",") if v.strip()]
            if "*" not in vary:
                if vary:
                    key2 = key_of(with_upstream_vary(pending.cache_parts, vary, pending.view.headers))
                    writes.append((store, pending.cache_key,
                                   vary_record(vary, now, pending.cache_parts, route.name), cache.ttl))
                    writes.append((store, key2, entry, cache.ttl))
                else:
                    writes.append((store, pending.cache_key, entry, cache.ttl))
        if pending.record_key:
            recorded = make_entry(status, headers, body, now, pending.record_parts, route.name,
                                  events)
            writes.append((self.stores.cassette(self.mode.cassette), pending.record_key,
                           recorded, None))
        if writes:
            for store, key, e, _ in writes:
                store.unwritten[key] = e
            # Record earlier hits first, so the eviction this write may cause sees them.
            touches = self.stores.take_touches()
            done = asyncio.get_running_loop().run_in_executor(self.writer, _write_all, writes,
                                                               touches)
            done.add_done_callback(lambda _: _written(writes))
        self._settle(pending, entry)

    def _settle(self, pending: Pending, entry: Entry | None) -> None:
        """Finish this flow's part in the cache; followers get its answer (or go on their own)."""
        pending.done = True
        if pending.leader is not None:
            if self.inflight.get(pending.coalesce_key) is pending.leader:
                del self.inflight[pending.coalesce_key]
            if not pending.leader.done():
                pending.leader.set_result((entry, pending.view.headers))


def _same_variant(shared: Entry, leader: dict[str, str], mine: dict[str, str]) -> bool:
    """May a waiting request take the leader's answer? Not when the upstream said Vary on a
    header in which the two requests differ."""
    vary = next((v for k, v in shared.headers if k.lower() == "vary"), "")
    names = [n.strip().lower() for n in vary.split(",") if n.strip()]
    if "*" in names:
        return False
    return all(leader.get(n) == mine.get(n) for n in names)


def _is_stream(entry: Entry) -> bool:
    return wants_stream(entry.status, {k.title(): v for k, v in entry.headers})


def _safe_summaries(store: EntryStore):
    try:
        yield from store.summaries()
    except StoreError as e:
        log.warning("could not read recordings: %s", e)


def _written(writes) -> None:
    """On the loop: what reached the disk no longer needs its in-memory copy (unless a
    newer answer for the same key is waiting to be written)."""
    for store, key, entry, _ in writes:
        if store.unwritten.get(key) is entry:
            del store.unwritten[key]


def _write_all(writes: list[tuple[EntryStore, str, Entry, float | None]],
               touches: list[tuple[EntryStore, list[str]]] = ()) -> None:
    """On a writer thread: a busy store (another process, a checkpoint) is retried a few
    times here, where waiting costs no request anything."""
    for store, keys in touches:
        store.flush_touches(keys)
    for store, key, entry, ttl in writes:
        for attempt in range(6):
            try:
                store.put(key, entry, ttl)
                break
            except StoreError as e:
                if attempt == 5:
                    log.warning("could not keep a response (%s): %s", key[:12], e)
                else:
                    time.sleep(0.05 * (attempt + 1))
