"""The answers bridge itself gives a client: JSON errors that can't pass for the upstream's.

Every error carries `{"error": {"type", "message"}}` and an `x-bridge-error` header with
the type, so an app (or a test) can tell bridge's refusal from the upstream's own answer.
"""

from __future__ import annotations

import json
import os
import re
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
    "schema_drift": 502,
    "client_gone": 499,
    "bad_fault_header": 400,
}

# Refusals that come back the same however often the client asks: they carry
# `x-should-retry: false`, which the OpenAI and Anthropic SDKs obey (an offline miss is a
# 504, which they would otherwise retry twice). budget_exceeded is not here: a refusal
# may clear once reservations in flight settle, and "store busy" asks to try again.
NOT_RETRYABLE = frozenset({"offline_miss", "bad_fault_header", "no_route"})


def error_reply(kind: str, message: str, *, extra: dict | None = None,
                headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON error of `kind` (a key of ERROR_STATUS) with a human message."""
    err = {"type": kind, "message": message}
    if extra:
        err.update(extra)
    body = json.dumps({"error": err}).encode()
    retry = (("x-should-retry", "false"),) if kind in NOT_RETRYABLE else ()
    return Reply(
        ERROR_STATUS[kind],
        (("content-type", "application/json"), ("x-bridge-error", kind), *retry, *headers),
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
    "first_token": ("upstream_timeout", "sent no first token in time"),
    "idle": ("upstream_timeout", "stalled mid-stream"),
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


def passthrough_failure(host: str, port: int, how: str, reason: str) -> Reply:
    """bridge's JSON error for pass-through traffic (no route) whose host failed; `how`:
    connect (DNS, refused, unreachable) | tls (its certificate) | answer (no HTTP answer)."""
    where, passed = f"{host}:{port}", "this request matched no route and was passed through"
    errno = re.match(r"\[Errno (-?\d+)\] (.*)", reason)
    if errno:  # "[Errno 111] Connect call failed (...)" says less than "Connection refused"
        n = int(errno[1])
        reason = os.strerror(n) if n > 0 else f"DNS: {errno[2]}"
    if how == "connect":
        return error_reply("upstream_unreachable", f"{where} could not be reached ({reason}); "
                           f"{passed}: check the host name and port, or that the server is up")
    if how == "tls":
        return error_reply("upstream_unreachable", f"TLS with {where} failed ({reason}); "
                           f"{passed}: to reach a server with a private CA, give it a route "
                           "whose upstream has `ca_file`")
    return error_reply("upstream_reset", f"{where} closed the connection without an HTTP "
                       f"answer ({reason}); {passed}")
