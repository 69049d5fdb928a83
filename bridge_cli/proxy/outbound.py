"""bridge's own upstream calls: one pooled aiohttp session, one try -> one Outcome.

Outbound hygiene (DESIGN.md): no decompression (the client gets the bytes the upstream
sent, Content-Encoding intact), no cookies kept between clients, no headers of our own,
hop-by-hop headers stripped both ways.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp

from bridge_cli.config.model import Timeout, Upstream
from bridge_cli.engine.attempts import CONNECT, FIRST_TOKEN, RESET, TIMEOUT, Outcome
from bridge_cli.engine.llm.sse import EventCutter, read_event
from bridge_cli.engine.rewrite import for_upstream

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Never copied from the client: we set Host for the upstream, aiohttp frames the body.
_REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length"}
STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "application/stream+json")
BUFFER_LIMIT = 8 * 2**20  # bytes: a larger declared body is streamed, not buffered


@dataclass(frozen=True)
class OutboundRequest:
    """The request as the client sent it, ready to be replayed on every try."""

    method: str
    path: str  # path and query, as received
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass
class UpstreamResponse:
    """An upstream's answer: headers now; the body read fully or left open to stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None  # None: not read yet, stream it from `raw`
    raw: aiohttp.ClientResponse
    prefix: bytes = b""  # streamed: what was read before the body proved too big to buffer


def make_session() -> aiohttp.ClientSession:
    """The one pooled session of the request path."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )
    # aiohttp silently resends an idempotent request once when a pooled connection drops;
    # then one try could reach the upstream twice behind the attempt loop's back. Every
    # resend must be the loop's decision (counted, budgeted, seen by the breaker).
    # Private attribute, pinned by tests/test_mitmproxy_facts.py.
    session._retry_connection = False
    return session


@lru_cache(maxsize=32)
def _ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    if ca_file is None:
        return None  # aiohttp's default: the system's trust store, verified
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=ca_file)
    return ctx


def upstream_url(upstream: Upstream, path: str) -> str:
    """The upstream's URL joined with the request's path (the upstream's base path first)."""
    base = upstream.url.rstrip("/")
    return base + (path if path.startswith("/") else "/" + path)


def rewritten(upstream: Upstream, req: OutboundRequest) -> OutboundRequest:
    """The request for a try at `upstream` (engine/rewrite.py decides), as a copy: the
    next try starts from what the client sent again."""
    if not upstream.rewrites():
        return req
    headers, body = for_upstream(upstream, tuple(req.headers), req.body)
    return dataclasses.replace(req, headers=headers, body=body)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Parse Retry-After (seconds or an HTTP date) into seconds from `now` (epoch)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def wants_stream(status: int, headers: aiohttp.typedefs.LooseHeaders) -> bool:
    """Should this response stream to the client instead of being buffered?"""
    ctype = headers.get("Content-Type", "").lower()
    if ctype.startswith(STREAM_TYPES):
        return True
    length = headers.get("Content-Length")
    return length is not None and length.isdigit() and int(length) > BUFFER_LIMIT


# Alt-Svc would send a client to the upstream's own HTTP/3 endpoint, around bridge.
_RESPONSE_SKIP = HOP_BY_HOP | {"alt-svc"}


def _response_headers(raw: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    out = []
    for k, v in raw.raw_headers:
        name = k.decode("latin-1")
        if name.lower() in _RESPONSE_SKIP:
            continue
        out.append((name, v.decode("latin-1")))
    return out


async def send_once(session: aiohttp.ClientSession, upstream: Upstream, req: OutboundRequest,
                    timeout: Timeout, *, first_token: float | None = None,
                    hold_sse: bool = False) -> Outcome:
    """Make one try at `upstream`; never raises for network trouble, reports it instead.
    `first_token`: seconds to the headers and (`hold_sse`) the first SSE data event, read
    here so a try that dies before it is a failed try, not a broken stream."""
    url = upstream_url(upstream, req.path)
    host = urlsplit(url).netloc
    req = rewritten(upstream, req)
    headers = [(k, v) for k, v in req.headers if k.lower() not in _REQUEST_SKIP]
    headers.append(("Host", host))
    started = time.monotonic()
    try:
        raw = await asyncio.wait_for(
            session.request(
                req.method,
                url,
                headers=headers,
                data=req.body if req.body or req.method not in ("GET", "HEAD") else None,
                allow_redirects=False,
                ssl=_ssl_context(upstream.ca_file),
                timeout=aiohttp.ClientTimeout(sock_connect=timeout.connect),
            ),
            first_token or timeout.total,
        )
    except aiohttp.ConnectionTimeoutError:
        # The connection never opened: a timeout, and the request provably never left.
        return Outcome(TIMEOUT, duration=time.monotonic() - started, never_left=True,
                       detail=f"connect timed out after {timeout.connect:g}s: {host}")
    except (TimeoutError, aiohttp.ServerTimeoutError):
        if first_token:
            return Outcome(FIRST_TOKEN, duration=time.monotonic() - started,
                           detail=f"no first token within {first_token:g}s: {host}")
        return Outcome(TIMEOUT, duration=time.monotonic() - started, detail=f"timed out: {url}")
    except aiohttp.ClientConnectorError as e:
        # Refused or unresolvable: the request provably never reached the upstream.
        return Outcome(CONNECT, duration=time.monotonic() - started, never_left=True,
                       detail=f"{e.os_error.strerror or e}: {host}")
    except (aiohttp.ClientError, OSError) as e:
        return Outcome(RESET, duration=time.monotonic() - started, detail=f"{type(e).__name__}: {e}")

    body = await _body(raw, req.method, timeout, started, first_token, hold_sse, url)
    if isinstance(body, Outcome):
        return body
    prefix = b""
    if isinstance(body, Overflow):  # streamed after all: what was read goes first
        body, prefix = None, body.head
    return Outcome(
        "response",
        status=raw.status,
        retry_after=retry_after_seconds(raw.headers.get("Retry-After"), time.time()),
        duration=time.monotonic() - started,
        handle=UpstreamResponse(raw.status, _response_headers(raw), body, raw, prefix),
        release=raw.close,
    )


async def _body(raw: aiohttp.ClientResponse, method: str, timeout: Timeout, started: float,
                first_token: float | None, hold_sse: bool, url: str
                ) -> bytes | Overflow | None | Outcome:
    """The answer's body: read whole, left open to stream (None), begun (an Overflow whose
    head goes first), or the try's failure while reading it."""
    if method == "HEAD":
        raw.release()
        return b""
    if wants_stream(raw.status, raw.headers):
        if not (hold_sse and raw.status < 300 and _is_sse(raw)):
            return None  # left open: the forwarder streams it
        limit = (first_token or timeout.total) - (time.monotonic() - started)
        head = await _first_event(raw, limit)
        if isinstance(head, bytes):
            return Overflow(head)  # handed on as the stream's prefix
        kind, detail = head
        return Outcome(kind, duration=time.monotonic() - started,
                       detail=f"{detail}: {urlsplit(url).netloc}")
    body = await _read_body(raw, timeout.total - (time.monotonic() - started), url)
    if isinstance(body, str):
        return Outcome(TIMEOUT if body.startswith("body timed out") else RESET,
                       duration=time.monotonic() - started, detail=body)
    return body


def _is_sse(raw: aiohttp.ClientResponse) -> bool:
    return raw.headers.get("Content-Type", "").lower().startswith("text/event-stream")


async def _first_event(raw: aiohttp.ClientResponse, limit: float
                       ) -> bytes | tuple[str, str]:
    """Everything up to and including the stream's first data event (the bytes exactly as
    they came), or how the wait failed: (FIRST_TOKEN | RESET, what happened)."""
    cutter, parts = EventCutter(), []

    async def read() -> bytes | None:
        while chunk := await raw.content.readany():
            parts.append(chunk)
            if any(read_event(ev).data is not None for ev in cutter.feed(chunk)):
                return b"".join(parts)
        return None

    try:
        head = await asyncio.wait_for(read(), max(limit, 0.001))
    except TimeoutError:
        raw.close()
        return FIRST_TOKEN, f"stream sent no data event within {limit:g}s"
    except (aiohttp.ClientError, OSError) as e:
        raw.close()
        return RESET, f"stream broke before its first event ({type(e).__name__})"
    if head is None:
        raw.close()
        return RESET, "stream ended before its first event"
    return head


@dataclass(frozen=True)
class Overflow:
    """A body without a declared length that passed BUFFER_LIMIT: what was read of it."""

    head: bytes


async def _read_body(raw: aiohttp.ClientResponse, remaining: float, url: str
                     ) -> bytes | Overflow | str:
    """The whole body within `remaining` seconds; an Overflow once more than BUFFER_LIMIT
    bytes came (the rest streams); or what went wrong in words (the connection is closed
    then)."""

    async def read() -> bytes | Overflow:
        parts, size = [], 0
        while chunk := await raw.content.readany():
            parts.append(chunk)
            size += len(chunk)
            if size > BUFFER_LIMIT:
                return Overflow(b"".join(parts))
        return b"".join(parts)

    try:
        body = await asyncio.wait_for(read(), max(remaining, 0.001))
        if isinstance(body, Overflow):
            return body
    except TimeoutError:
        raw.close()
        return f"body timed out: {url}"
    except (aiohttp.ClientError, OSError) as e:
        raw.close()
        return f"body cut: {type(e).__name__}"
    raw.release()
    return body
