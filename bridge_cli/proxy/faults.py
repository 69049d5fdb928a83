"""Applying a chaos Hit (decided by engine/chaos.py) to one try or to the final answer."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

from bridge_cli.config.model import Timeout
from bridge_cli.engine.attempts import RESET, TIMEOUT, Outcome
from bridge_cli.engine.chaos import Hit, Shaping, corrupt_body
from bridge_cli.proxy.outbound import UpstreamResponse, retry_after_seconds

HANG_FOREVER = 3600.0  # seconds: `hang: true` at the client stage waits at most this


Sleep = Callable[[float], Awaitable[None]]


async def wait_unless_gone(seconds: float, sleep: Sleep, client_gone: Callable[[], bool],
                           now: Callable[[], float] = time.monotonic) -> None:
    """Sleep `seconds` on the clock whose time `now` tells, waking early when the client
    has gone."""
    deadline = now() + seconds
    while not client_gone():
        left = deadline - now()
        if left <= 0:
            return
        await sleep(min(left, 0.1))


def injected_response(hit: Hit) -> UpstreamResponse:
    """The answer a status/preset fault gives instead of the upstream."""
    headers = list(hit.headers.items())
    return UpstreamResponse(hit.status, headers, hit.body, raw=None)


async def faulted_try(hit: Hit, timeout: Timeout, sleep: Sleep, client_gone: Callable[[], bool],
                      now: Callable[[], float] = time.monotonic) -> Outcome | None:
    """Apply the request-side part of `hit` to a try: an Outcome when the fault ends the
    try (the upstream is never called), None when the try goes on to the upstream.
    `sleep` and `now` are one clock's (seconds)."""
    started = now()
    if hit.delay:
        await wait_unless_gone(hit.delay, sleep, client_gone, now)
    name = hit.names[0]
    if hit.status is not None:
        retry_after = retry_after_seconds(hit.headers.get("retry-after"), time.time())
        return Outcome("response", hit.status, retry_after=retry_after,
                       duration=now() - started, handle=injected_response(hit),
                       never_left=True, fault=name, detail=f"injected by fault '{name}'")
    if hit.reset:
        return Outcome(RESET, duration=now() - started, never_left=True, fault=name,
                       detail=f"connection dropped by fault '{name}'")
    if hit.hang:
        # As if the upstream accepted and never answered: the route's timeout ends it.
        limit = timeout.total if hit.hang is True else min(float(hit.hang), timeout.total)
        await wait_unless_gone(limit, sleep, client_gone, now)
        return Outcome(TIMEOUT, duration=now() - started, never_left=True, fault=name,
                       detail=f"fault '{name}' hung the try")
    return None


async def client_hang(hit: Hit, client_gone: Callable[[], bool], sleep: Sleep = asyncio.sleep,
                      now: Callable[[], float] = time.monotonic) -> None:
    """`stage: client` hang: hold the answer until the client gives up or the hang ends."""
    seconds = HANG_FOREVER if hit.hang is True else float(hit.hang)
    await wait_unless_gone(seconds, sleep, client_gone, now)


async def client_fault(hit: Hit, final: Outcome, shaping, clock, sleep: Sleep,
                       client_gone: Callable[[], bool]):
    """Apply a `stage: client` fault to the final answer, after bridge's own retries:
    (answer, its shaping, error type). The answer is None when the fault resets or hangs
    the connection instead (error names which); shaping merges the fault's own."""
    if hit.delay:
        await wait_unless_gone(hit.delay, sleep, client_gone, clock.monotonic)
    if hit.terminal:
        final.discard()
        if hit.hang:
            await client_hang(hit, client_gone, clock.sleep, clock.monotonic)
        if hit.reset or hit.hang:
            return None, None, "injected_reset" if hit.reset else "injected_hang"
        final = Outcome("response", hit.status, handle=injected_response(hit),
                        fault=hit.names[0])
    if hit.shaping is not None:
        shaping = hit.shaping if shaping is None else shaping.merge(hit.shaping)
    return final, shaping, None


def corrupt_buffered(up: UpstreamResponse, shaping: Shaping | None) -> Shaping | None:
    """Apply a `corrupt` fault to a buffered body in place; the shaping left for the
    forwarder (None when corrupting was all of it). A stream is corrupted on its way."""
    if shaping is None or not shaping.corrupt or up.body is None:
        return shaping
    ctype = dict((k.lower(), v) for k, v in up.headers).get("content-type", "")
    up.body = corrupt_body(up.body, ctype)
    rest = dataclasses.replace(shaping, corrupt=False)
    return None if rest == Shaping() else rest
