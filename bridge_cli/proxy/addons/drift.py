"""Schema drift (a route's `drift:`): each 2xx JSON answer — and with `requests: true` each
JSON request body, and each event of a streamed answer — is compared with what its
endpoint looked like before (engine/drift.py learns and classifies; proxy/drift_keeper.py
keeps it). A new change is published once as a DriftEvent and noted on the flow; `action:
block` answers a breaking one with bridge's 502 `schema_drift` instead of the body.

Runs in `response` after the spend addon (a blocked answer was still billed) and before
the keep addon (a blocked answer is never cached)."""

from __future__ import annotations

import logging

from mitmproxy import http

from bridge_cli.config.model import Route
from bridge_cli.engine import drift as policy
from bridge_cli.engine.events import DriftEvent, EventBus
from bridge_cli.engine.replies import error_reply
from bridge_cli.engine.streams import READ_UPSTREAM, StreamObserver
from bridge_cli.proxy.drift_keeper import DriftKeeper
from bridge_cli.proxy.flowstate import FlowState, routed, state_of
from bridge_cli.proxy.respond import apply_reply

log = logging.getLogger("bridge.drift")


class DriftAddon:
    """Learns and checks the JSON of routes with `drift:`."""

    def __init__(self, bus: EventBus, keeper: DriftKeeper, wall) -> None:
        self.bus = bus
        self.keeper = keeper
        self.wall = wall  # epoch seconds

    def running(self) -> None:
        self.keeper.start()

    def request(self, flow: http.HTTPFlow) -> None:
        if (got := routed(flow)) is None:
            return
        st, route = got
        if route.drift is None:
            return
        template = policy.template(flow.request.path)
        if route.drift.requests and route.drift.schema is None:
            doc = policy.document(flow.request.raw_content,
                                  flow.request.headers.get("content-type"))
            if doc is not None:
                self._learn(st, route, policy.endpoint(st.method, template, "request"), doc)
        st.stream.observers.append(EventReader(self, st, route, template))

    def response(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st is None or st.route is None or st.route.drift is None or flow.response is None:
            return
        resp = flow.response
        if st.stream.handoff is not None or st.error or not 200 <= resp.status_code < 300:
            return  # streams: EventReader; errors are not the upstream's shape
        if st.cache.served_body is not None:
            return  # an answer bridge stored was checked when it was fresh
        doc = policy.document(resp.raw_content, resp.headers.get("content-type"))
        if doc is None:
            return
        route = st.route
        endpoint = policy.endpoint(st.method, policy.template(flow.request.path))
        found = self._learn(st, route, endpoint, doc)
        breaking = policy.blocking(found) if route.drift.action == "block" else None
        if breaking is not None:
            apply_reply(flow, error_reply("schema_drift", policy.block_message(route.name, breaking),
                                          extra={"finding": breaking.to_dict()}))

    def _learn(self, st: FlowState, route: Route, endpoint: str, doc: object) -> list:
        """Check (a supplied schema) or learn-and-compare one document; every breaking or
        new finding is noted on the flow; new ones are published."""
        now = self.wall()
        try:
            if route.drift.schema is not None:
                schema = self.keeper.schema(route.drift.schema)
                if schema is None:
                    return []
                found = policy.check(schema, doc, now=now, flow_id=st.id, route=route.name,
                                     endpoint=endpoint)
            elif route.drift.learn:
                found = self.keeper.baseline(route.name, endpoint).observe(
                    doc, now=now, flow_id=st.id, route=route.name, endpoint=endpoint)
                self.keeper.changed(route.name, endpoint)
            else:
                return []
        except Exception:  # drift is advice: a bug here must never fail the request
            log.exception("drift: checking %s %s failed", route.name, endpoint)
            return []
        for f in self.keeper.note(found):
            self.bus.publish(DriftEvent(f.route, f.endpoint, f.path, f.kind, f.severity,
                                        f.before, f.after, st.id, route.drift.action))
        st.drift.extend(f"{f.severity} {f.kind} {f.endpoint} {f.path}" for f in found)
        return found


class EventReader(StreamObserver):
    """Checks each JSON `data:` event of a streamed answer, by its event type, at the end."""

    phase = READ_UPSTREAM

    def __init__(self, addon: DriftAddon, st: FlowState, route: Route, template: str) -> None:
        self.addon, self.st, self.route, self.template = addon, st, route, template
        self.buf = bytearray()
        self.too_big = False

    def piece(self, data: bytes) -> bytes:
        if not self.too_big:
            self.buf += data
            if len(self.buf) > policy.MAX_BODY:
                self.too_big, self.buf = True, bytearray()
        return data

    def complete(self) -> None:
        if self.too_big or not self.buf:
            return
        for kind, doc in policy.stream_documents(bytes(self.buf)):
            endpoint = policy.endpoint(self.st.method, self.template, f"event:{kind}")
            self.addon._learn(self.st, self.route, endpoint, doc)
