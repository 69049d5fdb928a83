"""The answers bridge itself gives a client: JSON errors that can't pass for the upstream's.

Every error carries `{"error": {"type", "message"}}` and an `x-bridge-error` header with
the type, so an app (or a test) can tell bridge's refusal from the upstream's own answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """A complete response bridge sends instead of an upstream's."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


# type -> HTTP status; one line per kind of refusal.
ERROR_STATUS = {
    "upstream_unreachable": 502,
    "upstream_reset": 502,
    "upstream_timeout": 504,
    "all_upstreams_unavailable": 503,
    "retry_budget_exhausted": 503,
    "no_route": 404,
    "budget_exceeded": 402,
    "rate_limited": 429,
    "offline_miss": 504,
    "bridge_internal": 500,
    "bridge_stopping": 503,
    "client_gone": 499,
    "bad_fault_header": 400,
}


def error_reply(kind: str, message: str, *, extra: dict | None = None,
                headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON error of `kind` (a key of ERROR_STATUS) with a human message."""
    err = {"type": kind, "message": message}
    if extra:
        err.update(extra)
    body = json.dumps({"error": err}).encode()
    return Reply(
        ERROR_STATUS[kind],
        (("content-type", "application/json"), ("x-bridge-error", kind), *headers),
        body,
    )


def sse_error_event(kind: str, message: str) -> bytes:
    """An in-band SSE error event, for a stream that breaks after bytes were sent."""
    payload = json.dumps({"error": {"type": kind, "message": message}})
    return f"event: error\ndata: {payload}\n\n".encode()


# What a request that ended without an acceptable response tells its client, by how the
# last try failed: (error type, what happened).
_FAILED_TRY = {
    "timeout": ("upstream_timeout", "did not answer in time"),
    "connect": ("upstream_unreachable", "could not be reached"),
    "reset": ("upstream_reset", "dropped the connection"),
}


def failed_try_reply(route: str, upstream: str | None, kind: str, detail: str) -> Reply:
    """bridge's JSON error for a request whose last try failed with `kind`
    (timeout | connect | reset)."""
    error, what = _FAILED_TRY.get(kind, _FAILED_TRY["reset"])
    return error_reply(error, f"route '{route}': upstream '{upstream}' {what} ({detail})")


@dataclass(frozen=True)
class Conclusion:
    """What the client gets once the attempt loop is done: the final answer (`respond`),
    bridge's `reply`, or a `kill`ed connection (an injected reset)."""

    action: str  # respond | reply | kill
    reply: Reply | None = None
    error: str | None = None  # the error type to record, for a kill


def conclude(route: str, upstream: str | None, final_kind: str, final_fault: str | None,
             detail: str, *, client_gone: bool, all_unavailable: bool) -> Conclusion:
    """The answer to a request from how its attempt loop ended."""
    if client_gone:
        return Conclusion("reply", error_reply("client_gone",
                                               "the client went away; no more tries"))
    if all_unavailable and final_kind != "response":
        return Conclusion("reply", error_reply(
            "all_upstreams_unavailable",
            f"every upstream of route '{route}' has an open circuit breaker"))
    if final_kind == "response":
        return Conclusion("respond")
    if final_kind == "reset" and final_fault is not None:
        return Conclusion("kill", error="injected_reset")  # closes the client's connection
    return Conclusion("reply", failed_try_reply(route, upstream, final_kind, detail))
