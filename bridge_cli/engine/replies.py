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
