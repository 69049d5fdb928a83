"""Continuing a stream that broke after bytes reached the client (stream_recovery:
continue): the engine's plan says who is asked and how; this makes those tries and writes
the spliced continuation into the client's open stream (docs/llm-failover.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from bridge_cli.common.jsondoc import json_object
from bridge_cli.config.model import Route, Upstream
from bridge_cli.engine.attempts import Outcome
from bridge_cli.engine.events import TryRecord
from bridge_cli.engine.llm.continuation import (
    Mismatch,
    Splicer,
    continuation_body,
    recovery_plan,
)
from bridge_cli.engine.llm.sse import EventCutter
from bridge_cli.engine.llm.stream import FAILED, LlmStream
from bridge_cli.proxy.outbound import OutboundRequest, UpstreamResponse, send_once

log = logging.getLogger("bridge.recovery")
Emit = Callable[[bytes], Awaitable[None]]


class _Broken(Exception):
    """The continuation itself failed after it had begun."""


@dataclass
class Recovery:
    """Everything needed to continue one request's stream, gathered when it began."""

    route: Route
    request: OutboundRequest  # as the client sent it
    order: Sequence[Upstream]  # the strategy's order for this request
    cut: Upstream  # the upstream whose stream broke
    cut_tries_left: bool
    session: aiohttp.ClientSession
    guard: object  # the route's breakers: allow(upstream) / record(upstream, outcome)
    tries: list[TryRecord] = field(default_factory=list)  # the continuation's tries
    upstream: str | None = None  # the upstream that finished the answer

    async def run(self, stream: LlmStream, emit: Emit) -> bool:
        """Continue `stream` through `emit`; True once the answer ended properly."""
        body = json_object(self.request.body)
        if body is None:
            return False
        plan = recovery_plan(self.order, self.cut, self.cut_tries_left,
                             allowed=self.guard.allow)  # type: ignore[attr-defined]
        for upstream, mode in plan:
            doc = continuation_body(stream.provider, body, stream.text, mode)
            if doc is None:
                return False
            req = dataclasses.replace(self.request, body=json.dumps(doc).encode())
            t = self.route.timeout
            outcome = await send_once(self.session, upstream, req, t,
                                      first_token=t.first_token, hold_sse=True)
            ok = (outcome.kind == "response" and outcome.status == 200
                  and outcome.handle is not None and outcome.handle.body is None)
            self.tries.append(TryRecord(upstream.name, f"{mode}:" + ("ok" if ok else outcome.label),
                                        outcome.status, round(outcome.duration * 1000, 3)))
            self.guard.record(upstream, outcome)  # type: ignore[attr-defined]
            if not ok:
                outcome.discard()
                continue
            try:
                await self._splice(outcome, Splicer(stream, mode), stream, emit)
            except Mismatch as e:
                log.info("stream recovery at %s: %s", upstream.name, e)
                self.tries[-1] = dataclasses.replace(self.tries[-1],
                                                     outcome=f"{mode}:mismatch")
                continue
            except _Broken as e:
                log.warning("stream recovery at %s broke too: %s", upstream.name, e)
                return False
            finally:
                outcome.discard()
            self.upstream = upstream.name
            return True
        return False

    async def _splice(self, outcome: Outcome, splicer: Splicer, stream: LlmStream,
                      emit: Emit) -> None:
        """Pipe the continuation, rewritten, into the client's stream. A restart is held
        back until it has repeated the text already sent (Mismatch before any byte)."""
        up: UpstreamResponse = outcome.handle
        held: list[bytes] = []
        async for raw in _events(up, self.route.timeout.stream_idle):
            out = splicer.event(raw)
            if not out:
                continue
            verdict = stream.accept(out)
            if verdict.action == FAILED:
                raise _Broken(verdict.message)
            if splicer.strict and splicer.skip:
                held.append(out)
                continue
            for piece in (*held, out):
                await emit(piece)
            held = []
            if stream.done:
                return
        splicer.finish()
        for piece in held:
            await emit(piece)
        if not stream.finished:
            raise _Broken("the continuation ended before its finish event")
        await emit(stream.terminator())


async def _events(up: UpstreamResponse, idle: float):
    """The continuation's whole events, its held first event included."""
    cutter = EventCutter()
    for ev in cutter.feed(up.prefix):
        yield ev
    while True:
        try:
            chunk = await asyncio.wait_for(up.raw.content.readany(), idle)
        except TimeoutError:
            raise _Broken(f"the continuation stalled for {idle:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise _Broken(f"the continuation broke ({type(e).__name__})") from None
        if not chunk:
            return
        for ev in cutter.feed(chunk):
            yield ev


def llm_parts(route: Route, request: OutboundRequest, order: Sequence[Upstream],
              answered: Upstream | None, tries: Sequence[TryRecord], session, guard,
              up: UpstreamResponse) -> tuple[LlmStream | None, Recovery | None]:
    """For a streamed answer on this route: its event-by-event reader (an LLM route, or
    stream_repair asked for) and how to continue it (stream_recovery)."""
    sse = any(k.lower() == "content-type" and v.lower().startswith("text/event-stream")
              for k, v in up.headers)
    if up.body is not None or not sse or not (route.llm or route.repairs_streams):
        return None, None
    stream = LlmStream(route.llm or "", repair=route.repairs_streams)
    if not (route.llm and route.recovers_streams and answered is not None and up.status == 200):
        return stream, None
    used = sum(1 for t in tries if t.upstream == answered.name)
    attempts = route.retry.attempts if route.retry else 1
    return stream, Recovery(route, request, order, answered, used < attempts, session, guard)
