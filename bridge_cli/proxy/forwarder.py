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

from bridge_cli.engine.replies import sse_error_event
from bridge_cli.proxy.outbound import UpstreamResponse

log = logging.getLogger("bridge.forwarder")
PATH_PREFIX = "/_bridge/stream/"
HANDOFF_TTL = 30.0  # seconds a handed-off response waits for mitmproxy to collect it


@dataclass
class Handoff:
    """An open upstream response waiting to be streamed to one client."""

    response: UpstreamResponse
    idle_timeout: float  # seconds allowed between chunks
    created: float = field(default_factory=time.monotonic)
    bytes_sent: int = 0
    outcome: str = "pending"  # complete | cut | idle_timeout | client_gone
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_sse(self) -> bool:
        ctype = dict((k.lower(), v) for k, v in self.response.headers).get("content-type", "")
        return ctype.lower().startswith("text/event-stream")


class Forwarder:
    """A loopback aiohttp server inside bridge's event loop."""

    def __init__(self) -> None:
        self.pending: dict[str, Handoff] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_route("*", PATH_PREFIX + "{token}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        for h in self.pending.values():
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
            self.pending.pop(token).response.raw.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        handoff = self.pending.pop(request.match_info["token"], None)
        if handoff is None:
            return web.Response(status=410, text="bridge: unknown or expired stream token")
        up = handoff.response
        out = web.StreamResponse(status=up.status)
        for k, v in up.headers:
            if k.lower() != "content-length":
                out.headers.add(k, v)
        raw = up.raw
        try:
            await out.prepare(request)
            while True:
                try:
                    chunk = await asyncio.wait_for(raw.content.readany(), handoff.idle_timeout)
                except TimeoutError:
                    handoff.outcome = "idle_timeout"
                    await self._end_broken(out, handoff, "upstream_timeout",
                                           f"upstream sent nothing for {handoff.idle_timeout:g}s")
                    return out
                if not chunk:
                    break
                await out.write(chunk)
                handoff.bytes_sent += len(chunk)
            handoff.outcome = "complete"
            await out.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            handoff.outcome = "client_gone"
            raise
        except Exception as e:  # upstream cut mid-body
            handoff.outcome = "cut"
            await self._end_broken(out, handoff, "upstream_reset", f"upstream stream broke: {e}")
        finally:
            raw.close()
            handoff.done.set()
        return out

    async def _end_broken(self, out: web.StreamResponse, handoff: Handoff, kind: str,
                          message: str) -> None:
        """Never end a broken stream as if it succeeded."""
        if handoff.is_sse and out.prepared:
            try:
                await out.write(sse_error_event(kind, message))
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
