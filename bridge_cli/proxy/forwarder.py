"""bridge's forwarder: streams an upstream response that the attempt loop already opened.

mitmproxy's native streaming calls a synchronous per-chunk callback and cannot await an
upstream, time out an idle gap or end a stream with an in-band error. So when the
attempt loop gets a streaming answer (SSE, NDJSON, a large body), the request hook points
the flow at this loopback server with a one-time token; the handler pipes the open
aiohttp response back chunk by chunk, and mitmproxy relays that natively with
`flow.response.stream = True`. One code path decides every try; only streams take the
extra loopback hop (DESIGN.md measured +0.4 ms p50 for it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from bridge_cli.engine.chaos import Shaping
from bridge_cli.engine.llm.sse import EventCutter
from bridge_cli.engine.llm.stream import DROP, FAILED, LlmStream
from bridge_cli.engine.replies import sse_error_event
from bridge_cli.engine.streams import StreamObserver, pass_end, pass_piece
from bridge_cli.proxy.outbound import UpstreamResponse
from bridge_cli.proxy.stream_recovery import Recovery

log = logging.getLogger("bridge.forwarder")
PATH_PREFIX = "/_bridge/stream/"
HANDOFF_TTL = 30.0  # seconds a handed-off response waits for mitmproxy to collect it


@dataclass
class Handoff:
    """An open upstream response waiting to be streamed to one client."""

    response: UpstreamResponse
    idle_timeout: float  # seconds allowed between chunks
    shaping: Shaping | None = None  # response-side faults
    raw_cut: bool = False  # a faulted cut shows as a cut, without bridge's in-band error
    # A recorded stream to replay instead of `response.body`: (offset seconds, bytes).
    events: list[tuple[float, bytes]] | None = None
    pacing: bool = False  # replay `events` at their recorded offsets
    # Declared by the addons on the request's record (cache capture, usage, stripping),
    # in the order pieces pass them (engine/streams.py).
    observers: tuple[StreamObserver, ...] = ()
    llm: LlmStream | None = None  # an LLM route's SSE answer, read event by event
    recovery: Recovery | None = None  # how to continue it if it breaks (stream_recovery)
    created: float = field(default_factory=time.monotonic)
    bytes_sent: int = 0
    outcome: str = "pending"  # complete | cut | idle_timeout | client_gone
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_sse(self) -> bool:
        ctype = dict((k.lower(), v) for k, v in self.response.headers).get("content-type", "")
        return ctype.lower().startswith("text/event-stream")

    def complete(self) -> None:
        """The whole answer went through: tell the observers (storing is best effort)."""
        self.outcome = "complete"
        for o in self.observers:
            try:
                o.complete()
            except Exception:
                log.exception("a stream observer failed on a completed stream")


class Forwarder:
    """A loopback aiohttp server inside bridge's event loop."""

    def __init__(self) -> None:
        self.pending: dict[str, Handoff] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_route("*", PATH_PREFIX + "{token}", self._handle)
        # shutdown_timeout: at stop, streams still open are cut after this, not 60 s later
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        for h in self.pending.values():
            if h.response.raw is not None:
                h.response.raw.close()
        self.pending.clear()
        if self._runner is not None:
            await self._runner.cleanup()

    def register(self, handoff: Handoff) -> str:
        """Park an open response; the returned token is the path mitmproxy will ask for."""
        self._expire()
        token = secrets.token_urlsafe(16)
        self.pending[token] = handoff
        return token

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, h in self.pending.items() if now - h.created > HANDOFF_TTL]:
            raw = self.pending.pop(token).response.raw
            if raw is not None:
                raw.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        handoff = self.pending.pop(request.match_info["token"], None)
        if handoff is None:
            return web.Response(status=410, text="bridge: unknown or expired stream token")
        up = handoff.response
        out = web.StreamResponse(status=up.status)
        for k, v in up.headers:
            if k.lower() != "content-length":
                out.headers.add(k, v)
        pieces = None
        draining = False
        try:
            shaping = handoff.shaping or Shaping()
            if shaping.slow_first_byte:
                await asyncio.sleep(shaping.slow_first_byte)
            await out.prepare(request)
            pieces = _pieces(handoff, shaping)
            await self._pipe(out, handoff, shaping, pieces)
        except _IdleTimeout:
            await self._broken(out, handoff, "idle_timeout", "upstream_timeout",
                               f"the upstream stalled: nothing for {handoff.idle_timeout:g}s")
        except (ConnectionResetError, asyncio.CancelledError) as gone:
            handoff.outcome = "client_gone"
            if pieces is not None and any(o.wants_whole for o in handoff.observers):
                # An SDK closes the stream once it has read `[DONE]`; the upstream's answer
                # may still be complete: read it to the end (in a task of its own, as this
                # one may be cancelled) so it can be kept.
                draining = True
                asyncio.ensure_future(_drain(pieces, handoff))
            if isinstance(gone, asyncio.CancelledError):
                raise
            return out  # the client left: nothing to tell it, nothing to log
        except _Failed as e:
            await self._broken(out, handoff, "cut", "upstream_reset", str(e))
        except Exception as e:  # upstream cut mid-body
            await self._broken(out, handoff, "cut", "upstream_reset",
                               f"upstream stream broke: {type(e).__name__} {e}".strip())
        finally:
            if not draining:
                if up.raw is not None:
                    up.raw.close()
                handoff.done.set()
        return out

    async def _pipe(self, out: web.StreamResponse, handoff: Handoff, shaping: Shaping,
                    pieces) -> None:
        """Every piece through the observers to the client; a fault may cut it short."""
        up = handoff.response
        length = len(up.body) if up.body is not None else _declared_length(up.headers)
        limit = shaping.truncate_at(length)
        async for piece in pieces:
            if piece is _CUT:
                raise _Failed("the upstream stream was cut (injected fault)")
            piece = pass_piece(handoff.observers, piece)
            if limit is not None and handoff.bytes_sent + len(piece) >= limit:
                await _write(out, piece[: max(0, limit - handoff.bytes_sent)], shaping, handoff)
                handoff.outcome = "cut"
                await self._end_broken(out, handoff, "upstream_reset",
                                       "the upstream body was cut short (injected fault)")
                return
            await _write(out, piece, shaping, handoff)
        llm = handoff.llm
        if llm is not None and llm.provider and not llm.done:
            if not llm.finished:
                raise _Failed("the upstream ended the stream before its finish event")
            # The answer finished but the terminator never came: end it now, not at a timeout.
            await _write(out, pass_piece(handoff.observers, llm.terminator()), shaping, handoff)
        await _write(out, pass_end(handoff.observers), shaping, handoff)
        await out.write_eof()
        handoff.complete()

    async def _broken(self, out: web.StreamResponse, handoff: Handoff, outcome: str, kind: str,
                      message: str) -> None:
        """A stream broke after its headers reached the client: continue it where the
        route says so and it can be, else end it with an in-band error."""
        handoff.outcome = outcome
        llm, recovery = handoff.llm, handoff.recovery
        if llm is not None and recovery is not None and out.prepared and not handoff.raw_cut:
            plain = Shaping()

            async def emit(data: bytes) -> None:
                await _write(out, pass_piece(handoff.observers, data), plain, handoff)

            if llm.finished and not llm.done:
                await emit(llm.terminator())
                recovered = True
            else:
                recovered = llm.can_continue and await recovery.run(llm, emit)
            if recovered:
                log.warning("route '%s': a broken stream was continued at '%s' (%s)",
                            recovery.route.name, recovery.upstream, message)
                await _write(out, pass_end(handoff.observers), plain, handoff)
                await out.write_eof()
                handoff.complete()
                return
        await self._end_broken(out, handoff, kind, message)

    async def _end_broken(self, out: web.StreamResponse, handoff: Handoff, kind: str,
                          message: str) -> None:
        """Never end a broken stream as if it succeeded."""
        if handoff.is_sse and out.prepared and not handoff.raw_cut:
            event = (handoff.llm.error_event(kind, message) if handoff.llm is not None
                     else sse_error_event(kind, message))
            try:
                await out.write(event)
                await out.write_eof()
                return
            except Exception:
                pass
        # Not SSE: the only honest signal left is an aborted body.
        if out.task is not None:
            out.force_close()
        transport = out._req.transport if out._req is not None else None  # type: ignore[attr-defined]
        if transport is not None:
            transport.abort()


class _IdleTimeout(Exception):
    """The upstream sent nothing for longer than the idle timeout."""


class _Failed(Exception):
    """The upstream's stream failed in a way bridge saw: a cut, an in-band error, an end
    before the answer finished."""


_CUT = object()  # marker from _sse_events: cut the stream here


def _declared_length(headers: list[tuple[str, str]]) -> int | None:
    for k, v in headers:
        if k.lower() == "content-length" and v.isdigit():
            return int(v)
    return None


async def _chunks(handoff: Handoff):
    """The body: buffered bytes in slices, or the open upstream response with idle timeout."""
    up = handoff.response
    if up.body is not None:
        for i in range(0, len(up.body), 16384):
            yield up.body[i : i + 16384]
        return
    if up.prefix:  # read while bridge still meant to buffer it
        yield up.prefix
    while True:
        try:
            chunk = await asyncio.wait_for(up.raw.content.readany(), handoff.idle_timeout)
        except TimeoutError:
            raise _IdleTimeout from None
        if not chunk:
            return
        yield chunk


async def _drain(pieces, handoff: Handoff) -> None:
    """Read what is left of the upstream after the client left; keep it if it completes."""
    try:
        async for piece in pieces:
            if piece is _CUT:
                return
            pass_piece(handoff.observers, piece)
        pass_end(handoff.observers)
        handoff.complete()
    except Exception:
        log.debug("a stream whose client left did not complete", exc_info=True)
    finally:
        if handoff.response.raw is not None:
            handoff.response.raw.close()
        handoff.done.set()


def _pieces(handoff: Handoff, shaping: Shaping):
    """The body's pieces: replayed, or read; re-cut into SSE events when a fault acts on them."""
    pieces = _replay(handoff) if handoff.events is not None else _chunks(handoff)
    if handoff.is_sse and (shaping.sse_cut_after is not None or shaping.sse_delay):
        pieces = _sse_events(pieces, shaping)
    if handoff.llm is not None and handoff.is_sse:
        pieces = _llm_events(pieces, handoff.llm)
    return pieces


async def _llm_events(pieces, stream: LlmStream):
    """An LLM stream event by event: malformed ones dropped (stream_repair), an in-band
    upstream error raised as a failure, the stream's state kept for the end and recovery."""
    cutter = EventCutter()
    async for piece in pieces:
        if piece is _CUT:
            yield piece
            return
        for event in cutter.feed(piece):
            verdict = stream.accept(event)
            if verdict.action == DROP:
                log.warning("dropped a malformed stream event (%s): %r", verdict.message,
                            event[:120])
                continue
            if verdict.action == FAILED:
                raise _Failed(f"the upstream sent an error mid-stream: {verdict.message}")
            yield event
    rest = cutter.rest()
    if rest.strip() and not stream.repair:
        yield rest  # an event the upstream never finished, passed on as it came


async def _replay(handoff: Handoff):
    """A recorded stream's pieces, at their recorded offsets when pacing."""
    t0 = time.monotonic()
    for offset, piece in handoff.events:
        if handoff.pacing:
            wait = offset - (time.monotonic() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
        yield piece


async def _sse_events(chunks, shaping: Shaping):
    """Re-cut a byte stream into whole SSE events, delaying or cutting per the faults."""
    buf, sent = b"", 0
    async for chunk in chunks:
        buf += chunk
        while True:
            end = _event_end(buf)
            if end < 0:
                break
            event, buf = buf[:end], buf[end:]
            if shaping.sse_cut_after is not None and sent >= shaping.sse_cut_after:
                yield _CUT
                return
            if shaping.sse_delay and sent > 0:
                await asyncio.sleep(shaping.sse_delay)
            yield event
            sent += 1
    if buf:
        yield buf


def _event_end(buf: bytes) -> int:
    """Index just past the first complete SSE event in `buf`, or -1."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := buf.find(sep)) >= 0]
    return min(ends) if ends else -1


async def _write(out: web.StreamResponse, data: bytes, shaping: Shaping, handoff: Handoff) -> None:
    """Write `data`, at most `shaping.throttle` bytes per second."""
    if not data:
        return
    if not shaping.throttle:
        await out.write(data)
        handoff.bytes_sent += len(data)
        return
    step = max(1, shaping.throttle // 20)  # 20 writes a second
    for i in range(0, len(data), step):
        piece = data[i : i + step]
        await out.write(piece)
        handoff.bytes_sent += len(piece)
        await asyncio.sleep(len(piece) / shaping.throttle)
