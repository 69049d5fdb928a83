"""The control API's event stream: each bus event as a numbered server-sent event.

Publishing is an append to a bounded ring and never waits, so a slow or stuck client can
not slow the proxy: each client reads the ring at its own pace, and when the ring has moved
past what it read, it is told how many events it missed (`dropped`). Counts don't depend on
that: a `stats` event each second carries the exact counters of the running bridge.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, deque
from collections.abc import Callable

from aiohttp import web

from bridge_cli.control.view import PROXY_LISTENER, BridgeView

RING = 2000  # events kept for clients that reconnect with Last-Event-ID
STATS_EVERY = 1.0  # seconds between two `stats` events on a stream
BATCH_WAIT = 0.05  # seconds a woken stream waits for more events, so it writes in batches


def frame(kind: str, data: dict, event_id: int | None = None) -> bytes:
    """One server-sent event: `id:` (bus events only), `event:`, `data:` one JSON line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


def parse_last_id(value: str | None) -> int | None:
    """The number in a Last-Event-ID header (or `?last_event_id=`), None if absent or bad."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


class EventHub:
    """The ring of recent bus events and the streams reading it; `publish` subscribes to
    the bus. Ids start at 1 with every bridge start."""

    def __init__(self, stats: Callable[[], dict], ring: int = RING,
                 stats_every: float = STATS_EVERY) -> None:
        self._stats = stats
        self._ring: deque[tuple[int, str, object, float]] = deque(maxlen=ring)
        self._wakers: set[asyncio.Event] = set()
        self._streams: set[asyncio.Task] = set()
        self.stats_every = stats_every
        self.last_id = 0
        self.counts: Counter[str] = Counter()  # events published since start, by kind
        self.closed = False

    def publish(self, event) -> None:
        """Bus subscriber: number the event, keep it, wake the streams. Never waits."""
        self.last_id += 1
        self._ring.append((self.last_id, event.kind, event, time.time()))
        self.counts[event.kind] += 1
        for waker in self._wakers:
            waker.set()

    def close(self) -> None:
        """End every stream (the control API is stopping)."""
        self.closed = True
        for task in self._streams:  # a client that doesn't read may be stuck in a write
            task.cancel()

    def since(self, cursor: int) -> tuple[list[tuple[int, str, object, float]], int]:
        """Events after id `cursor` still in the ring, and how many after it were lost."""
        if not self._ring or cursor >= self.last_id:
            return [], 0
        first = self._ring[0][0]
        start = max(0, cursor + 1 - first)
        return list(itertools.islice(self._ring, start, None)), max(0, first - cursor - 1)

    def stats(self) -> dict:
        """The `stats` event: exact counters, whatever a client was sent."""
        return {"ts": round(time.time(), 3), "last_id": self.last_id,
                "events": dict(self.counts), **self._stats()}

    def start_cursor(self, last_id: int | None) -> int:
        """Where a stream starts: after `last_id`, from the ring's start when the id is not
        this bridge's (a restart: ids begin again), and live when none was given."""
        if last_id is None:
            return self.last_id
        return last_id if last_id <= self.last_id else 0

    async def stream(self, request: web.Request, last_id: int | None, hello: dict) -> web.StreamResponse:
        """Serve one client until it goes away or the hub closes."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cursor = self.start_cursor(last_id)
        await resp.write(frame("hello", {**hello, "last_id": self.last_id}))
        waker = asyncio.Event()
        self._wakers.add(waker)
        task = asyncio.current_task()
        self._streams.add(task)
        loop = asyncio.get_running_loop()
        next_stats = loop.time()
        try:
            while not self.closed:
                cursor = await self._send_new(resp, cursor)
                if loop.time() >= next_stats:
                    await resp.write(frame("stats", self.stats()))
                    next_stats = loop.time() + self.stats_every
                if cursor >= self.last_id and not self.closed:
                    waker.clear()
                    try:
                        await asyncio.wait_for(waker.wait(), max(0.0, next_stats - loop.time()))
                        await asyncio.sleep(BATCH_WAIT)
                    except TimeoutError:
                        pass
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away
        finally:
            self._wakers.discard(waker)
            self._streams.discard(task)
        return resp

    async def _send_new(self, resp: web.StreamResponse, cursor: int) -> int:
        """Write the events after `cursor` in one write; the new cursor."""
        batch, dropped = self.since(cursor)
        if not batch:
            return cursor
        parts = []
        if dropped:
            parts.append(frame("dropped", {"dropped": dropped, "after_id": cursor}))
        for event_id, kind, event, ts in batch:
            data = event.to_dict()
            data.setdefault("ts", round(ts, 3))
            parts.append(frame(kind, data, event_id))
        await resp.write(b"".join(parts))
        return batch[-1][0]


def live_counts(view: BridgeView) -> dict:
    """What a `stats` event carries besides the hub's own counts: each route's requests,
    errors, statuses and latency, every breaker and the active faults."""
    names = [r.name for r in view.config.routes] + [PROXY_LISTENER]
    routes = {}
    for name in names:
        s = view.route_stats(name)
        routes[name] = {"requests": s.requests, "errors": s.errors, "statuses": s.statuses,
                        "cache": s.cache, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms}
    breakers = [{"route": r.name, "upstream": upstream, **snap}
                for r in view.config.routes for upstream, snap in view.breakers(r.name).items()]
    alert_at = {f"route:{r.name}": r.budget.alert_at for r in view.config.routes if r.budget}
    if view.config.budget is not None:
        alert_at["global"] = view.config.budget.alert_at
    return {"routes": routes, "breakers": breakers, "faults": view.faults(),
            "alert_at": alert_at}
