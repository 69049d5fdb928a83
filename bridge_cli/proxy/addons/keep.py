"""Step 8 of a request: keep what the upstream answered, in the cache and in `--record`'s
cassette, and hand it to identical requests that waited for it (engine/cache_plan.py says
what to write; proxy/cache_writer.py writes it behind the request)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mitmproxy import http

from bridge_cli.common.entry import Entry
from bridge_cli.config.model import Cache as CacheConfig
from bridge_cli.config.model import Route
from bridge_cli.engine import cache_plan as plans
from bridge_cli.engine.clock import Clock
from bridge_cli.engine.coalesce import InFlight
from bridge_cli.engine.pricing import UsageStripper
from bridge_cli.engine.streams import Capture
from bridge_cli.proxy.cache_writer import CacheWriter
from bridge_cli.proxy.flowstate import FlowState, state_of


@dataclass
class Pending:
    """A flow's part in the cache until its answer is complete."""

    plan: plans.CachePlan
    route: Route
    leader: asyncio.Future | None = None  # set when identical requests wait on this one
    done: bool = False


class KeepAddon:
    """Keeps complete answers that the cache addon planned to keep; releases followers."""

    def __init__(self, writer: CacheWriter, inflight: InFlight, clock: Clock) -> None:
        self.writer = writer
        self.inflight = inflight
        self.clock = clock

    def expect(self, st: FlowState, pending: Pending) -> None:
        """Called by the cache addon: keep this flow's answer once it is complete; a stream
        is captured piece by piece on its way to the client."""
        st.cache.pending = pending
        st.stream.observers.append(Capture(lambda pieces: self._captured(st, pieces),
                                           limit=_entry_limit(pending)))

    def response(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        pending: Pending | None = st.cache.pending if st else None
        if pending is None or pending.done:
            return
        if st.stream.handoff is not None:
            self._after_stream(st, pending)  # the stream's capture keeps it
        elif flow.response is None or flow.response.stream:
            self._settle(pending, None)  # nothing complete to keep
        else:
            r = flow.response
            self._keep(st, pending, r.status_code, list(r.headers.items(multi=True)),
                       r.raw_content or b"", None)

    def error(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        pending = st.cache.pending if st else None
        if pending is not None and not pending.done:
            if st.stream.handoff is not None:
                self._after_stream(st, pending)  # the forwarder may still keep it
            else:
                self._settle(pending, None)

    def _after_stream(self, st: FlowState, pending: Pending) -> None:
        """A stream's fate is the forwarder's to tell (it completes one even after the
        client left); settle what it didn't keep once it is done."""
        done = st.stream.handoff.done

        async def wait() -> None:
            await done.wait()
            if not pending.done:
                self._settle(pending, None)

        if not done.is_set():
            asyncio.ensure_future(wait())
        elif not pending.done:
            self._settle(pending, None)

    def _captured(self, st: FlowState, pieces: list[tuple[float, bytes]]) -> None:
        pending: Pending | None = st.cache.pending
        if pending is None or pending.done or st.stream.handoff is None:
            return
        up = st.stream.handoff.response
        # The events are what the client got; the body is the whole upstream answer: with
        # the usage chunk bridge asked for and stripped (inject_usage), so a hit on this
        # entry prices what it saved (engine/spend.stored_body) and replays the same events.
        stripped = b"".join(b"".join(o.removed) for o in st.stream.observers
                            if isinstance(o, UsageStripper))
        self._keep(st, pending, up.status, up.headers,
                   b"".join(p for _, p in pieces) + stripped, pieces)

    def _keep(self, st: FlowState, pending: Pending, status: int,
              headers: list[tuple[str, str]], body: bytes,
              events: list[tuple[float, bytes]] | None) -> None:
        if st.faults.fired or st.error or len(body) > _entry_limit(pending):
            # faulted or bridge's own error: never kept, never shared; too big: passed on only
            self._settle(pending, None)
            return
        plan = pending.plan
        entry, writes = plans.response_writes(plan, pending.route.name, status, headers, body,
                                              events, self.clock.wall())
        self.writer.submit(writes, plan.view.namespace, plan.cache.max_size if plan.cache else None)
        self._settle(pending, entry)

    def _settle(self, pending: Pending, entry: Entry | None) -> None:
        """Finish this flow's part in the cache; followers get its answer (or go on their own)."""
        pending.done = True
        if pending.leader is not None:
            result = (entry, pending.plan.view.headers) if entry is not None else None
            self.inflight.finish(pending.plan.cache_key, pending.leader, result)


def _entry_limit(pending: Pending) -> int:
    """The largest answer this flow may keep (bytes): the route's cache.max_entry_size."""
    return (pending.plan.cache or CacheConfig()).max_entry_size
