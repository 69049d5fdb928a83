"""Helpers for what bridge's addons record on a flow and how bridge answers one."""

from __future__ import annotations

import time
from typing import Any

from mitmproxy import http

from bridge_cli.config.model import Route
from bridge_cli.engine.replies import Reply

META = "bridge"


def meta(flow: http.HTTPFlow) -> dict[str, Any] | None:
    """bridge's record on this flow, or None for flows bridge never saw."""
    return flow.metadata.get(META)


def route_of(flow: http.HTTPFlow) -> Route | None:
    """The route this flow runs on (from the config it started with), or None."""
    m = meta(flow)
    if not m or m["route"] is None:
        return None
    return m["config"].route(m["route"])


def overhead_ms(m: dict[str, Any]) -> float:
    """Time bridge itself added so far: wall time minus time spent waiting on upstreams."""
    return max(0.0, (time.monotonic() - m["t0"] - m["upstream_s"]) * 1000)


def bridge_headers(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The x-bridge-* headers every routed response carries."""
    h = [("x-bridge-request-id", m["id"])]
    if m.get("route"):
        h.append(("x-bridge-route", m["route"]))
    if m.get("upstream"):
        h.append(("x-bridge-upstream", m["upstream"]))
    if "attempts" in m:
        h.append(("x-bridge-attempts", str(m["attempts"])))
    if m.get("faults"):
        h.append(("x-bridge-fault", ",".join(m["faults"])))
    if m.get("cache"):
        h.append(("x-bridge-cache", m["cache"]))
    return h


def apply_reply(flow: http.HTTPFlow, reply: Reply) -> None:
    """Answer the flow with a reply of bridge's own (no upstream contacted after this)."""
    m = meta(flow)
    if m is not None:
        m["error"] = dict(reply.headers).get("x-bridge-error")
    headers = [(k.encode(), v.encode()) for k, v in reply.headers]
    flow.response = http.Response.make(reply.status, reply.body, headers)
    if m is not None:
        for k, v in bridge_headers(m):
            flow.response.headers[k] = v
        flow.response.headers["x-bridge-overhead-ms"] = f"{overhead_ms(m):.2f}"
