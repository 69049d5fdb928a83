"""The cache's decisions for one request: what to look up, what to keep, why a replay missed.

proxy/addons/cache.py applies them: it reads and writes the stores these decisions name,
serves what they found, and shares calls in flight (engine/coalesce.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bridge_cli.common.entry import Entry, describe_request, make_entry, vary_record
from bridge_cli.config.model import Cache
from bridge_cli.engine.cache import (
    MAX_SHOWN,
    ReplayMode,
    RequestView,
    body_fields,
    changed_fields,
    closest,
    describe_changes,
    is_fresh,
    key_of,
    key_parts,
    request_policy,
    response_storable,
    with_upstream_vary,
)
from bridge_cli.engine.replies import Reply, error_reply

# Recording keeps every method's answer, whatever the route's cache says.
RECORD_ALL = Cache(ttl=0, methods=("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
CACHE, CASSETTE = "cache", "cassette"


@dataclass
class CachePlan:
    """Keys of one request: the cache's (when it may store), the recording's (when it
    records or replays), and whether a stored answer may be served."""

    view: RequestView
    cache: Cache | None
    cache_key: str | None = None
    cache_parts: dict | None = None
    record_key: str | None = None
    record_parts: dict | None = None
    lookup: bool = False

    @property
    def status(self) -> str | None:
        """x-bridge-cache before any lookup: `refresh` when stored without a lookup."""
        if self.lookup:
            return "miss"
        return "refresh" if self.cache_key else None

    @property
    def keeps(self) -> bool:
        """Is there anything to keep once the answer is complete?"""
        return bool(self.cache_key or self.record_key)


@dataclass(frozen=True)
class Write:
    """One entry to put in a store: `target` cache (the view's namespace) or cassette."""

    target: str
    key: str
    entry: Entry
    ttl: float | None


def plan_request(view: RequestView, cache: Cache | None, mode: ReplayMode,
                 route: str) -> CachePlan | None:
    """The plan for a request on `route`; None when neither the cache nor a recording
    has anything to do with it."""
    if cache is None and not mode.record and not mode.offline:
        return None
    plan = CachePlan(view, cache)
    policy = request_policy(view.method, view.headers, cache) if cache else None
    if cache is not None and policy.store:
        plan.cache_parts = key_parts(view, cache)
        plan.cache_key = key_of(plan.cache_parts)
        plan.lookup = policy.lookup
    if mode.records(route) or mode.offline:
        plan.record_parts = key_parts(view, cache or RECORD_ALL, credentials=False)
        plan.record_key = key_of(plan.record_parts)
    return plan


def lookup(get: Callable[[str], Entry | None], plan: CachePlan, now: float, *,
           stale_ok: bool) -> Entry | None:
    """The fresh stored answer for `plan` (two levels when the upstream said Vary)."""
    entry = get(plan.cache_key)
    if entry is not None and entry.vary is not None:
        entry = get(key_of(with_upstream_vary(entry.parts, entry.vary, plan.view.headers)))
    if entry is None:
        return None
    if not stale_ok and not is_fresh(entry, plan.cache.ttl, now):
        return None
    return entry


def same_variant(shared: Entry, leader: Mapping[str, str], mine: Mapping[str, str]) -> bool:
    """May a waiting request take the leader's answer? Not when the upstream said Vary on a
    header in which the two requests differ."""
    vary = next((v for k, v in shared.headers if k.lower() == "vary"), "")
    names = [n.strip().lower() for n in vary.split(",") if n.strip()]
    if "*" in names:
        return False
    return all(leader.get(n) == mine.get(n) for n in names)


def recorded_hit(entry: Entry, plan: CachePlan) -> Write:
    """`--record` keeps cache hits too: the hit, under the recording's key."""
    recorded = make_entry(entry.status, entry.headers, entry.body, entry.stored_at,
                          recording_parts(plan), entry.route, entry.events, entry.about)
    return Write(CASSETTE, plan.record_key, recorded, None)


def response_writes(plan: CachePlan, route: str, status: int, headers: list[tuple[str, str]],
                    body: bytes, events: list[tuple[float, bytes]] | None,
                    now: float) -> tuple[Entry, list[Write]]:
    """The entry a complete answer makes (shared with coalesced followers) and the writes
    that keep it: the cache's (one or two levels) when storable, and the recording's."""
    about = describe_request(plan.view.body, plan.view.path)  # for `bridge cache ls`
    entry = make_entry(status, headers, body, now, plan.cache_parts or {}, route, events, about)
    writes = []
    lower = {k.lower(): v for k, v in headers}
    if plan.cache_key and response_storable(status, lower, plan.cache):
        ttl = plan.cache.ttl
        vary = [v.strip().lower() for v in lower.get("vary", "").split(",") if v.strip()]
        if vary and "*" not in vary:
            key2 = key_of(with_upstream_vary(plan.cache_parts, vary, plan.view.headers))
            writes.append(Write(CACHE, plan.cache_key,
                                vary_record(vary, now, plan.cache_parts, route), ttl))
            writes.append(Write(CACHE, key2, entry, ttl))
        elif not vary:
            writes.append(Write(CACHE, plan.cache_key, entry, ttl))
    if plan.record_key:
        recorded = make_entry(status, headers, body, now, recording_parts(plan), route, events,
                              about)
        writes.append(Write(CASSETTE, plan.record_key, recorded, None))
    return entry, writes


def offline_miss(plan: CachePlan, recorded: Iterable[Mapping], cassette: str,
                 route: str) -> Reply:
    """bridge's 504 for a request with no recording, naming the closest one and how it
    differs: the body by JSON path and both values (credentials never shown)."""
    wanted = plan.record_parts
    fields = _fields(plan)
    near, diff = closest(wanted, recorded, fields)
    detail = {"key": {k: v for k, v in wanted.items() if k != "credentials"},
              "cassette": cassette}
    if near is not None:
        detail["closest"] = {k: v for k, v in near.items()
                             if k not in ("credentials", "body_fields")}
        detail["differences"] = diff
        changes = changed_fields(fields, near)
        if changes:
            detail["body_changes"] = changes[:MAX_SHOWN]
        words = ["body differs (recorded → this request): " + describe_changes(changes)
                 if d == "body differs" and changes else d for d in diff]
        why = "; the closest recording differs: " + "; ".join(words)
    else:
        why = f"; cassette '{cassette}' has nothing for route '{route}'"
    return error_reply("offline_miss",
                       f"offline: no recording of {wanted['method']} {wanted['path']}{why}",
                       extra=detail)


def _fields(plan: CachePlan) -> dict[str, str] | None:
    """The request body's leaves as a recording keeps them (see recording_parts)."""
    return body_fields(plan.view.body, (plan.cache or RECORD_ALL).ignore_body_fields)


def recording_parts(plan: CachePlan) -> dict:
    """The key parts a recording stores: its key's, plus the request body's JSON leaves
    (not part of the key), so a later offline miss can say which fields differ."""
    fields = _fields(plan)
    return {**plan.record_parts, "body_fields": fields} if fields else plan.record_parts


def unrouted_offline(host: str) -> Reply:
    """Offline, traffic that matches no route has nothing to be served from."""
    return error_reply("offline_miss", "bridge is offline: only routes' recordings and cache "
                       f"are served, and {host} matches no route")
