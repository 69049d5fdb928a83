"""Resilience end to end: fallback, retries, Retry-After, the retry budget, timeouts,
streams, strategies and circuit breakers, on a real bridge with real misbehaving upstreams.

Every test asserts on what the upstreams actually received (`.calls`), on the x-bridge-*
headers, on the FlowEvent's `tries`, on BreakerEvents or on `bridge status`.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import httpx
import pytest
from aiohttp import web

from bridge_cli.engine.clock import ManualClock
from tests.conftest import (
    breaker_moves,
    bridge_cmd,
    counting_sse,
    dead_url,
    flow_event,
    free_env,
    one_route,
    tries,
)
from tests.conftest import wait_for as _wait_for

# --- helpers -----------------------------------------------------------------------------


def answer(status: int, headers: dict | None = None, stamps: list | None = None,
           delay: float = 0.0):
    """A handler answering `status` (after `delay`), noting when each call arrived."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if stamps is not None:
            stamps.append(time.monotonic())
        if delay:
            await asyncio.sleep(delay)
        return web.json_response({"answered": status}, status=status, headers=headers)

    return handler


def switchable(state: dict):
    """A handler answering `state["status"]` (mutable from the test)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"answered": state["status"]}, status=state["status"])

    return handler


async def hang(request: web.Request, seconds: float) -> None:
    """Hold the request for `seconds`, or until the caller hangs up (keeps teardown fast)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.02)


def hanging(seconds: float = 3.0):
    async def handler(request: web.Request) -> web.StreamResponse:
        await hang(request, seconds)
        return web.Response(text="too late")

    return handler


async def drop_before_headers(request: web.Request) -> web.StreamResponse:
    """Close the connection without answering: the caller sees a reset before headers."""
    request.transport.close()
    await asyncio.sleep(0.05)
    return web.Response(text="never sent")


class Blackhole:
    """A listener whose accept queue is full: a new connection to it is neither completed
    nor refused, so only the connect timeout ends the attempt."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(c)
        # the first filler's handshake completes (it fills the queue); the others stay pending
        select.select([], self.fillers[:1], [], 1.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


@pytest.fixture
def blackhole():
    bh = Blackhole()
    yield bh
    bh.close()


def upstream_status(b, route: str = "api") -> dict[str, dict]:
    """`bridge status` (control API) per upstream of `route`."""
    r = next(r for r in b.control().status()["routes"] if r["name"] == route)
    return {u["name"]: u for u in r["upstreams"]}


def sse_lines(c: httpx.Client, url: str) -> tuple[httpx.Response, list[str]]:
    with c.stream("GET", url) as r:
        lines = list(r.iter_lines())
    return r, lines


# --- fallback ------------------------------------------------------------------------------


def test_fallback_primary_503_backup_answers_and_every_try_is_visible(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(503))
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url)))
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.json()["path"] == "/v1/x"  # the backup's echo
    assert r.headers["x-bridge-upstream"] == "backup"
    assert r.headers["x-bridge-attempts"] == "2"
    assert len(primary.calls) == 1 and len(backup.calls) == 1
    ev = flow_event(b, r)
    assert tries(ev) == [("primary", "503"), ("backup", "ok")]
    assert [t.status for t in ev.tries] == [503, 200]
    assert ev.attempts == 2 and ev.upstream == "backup" and ev.status == 200


def test_refused_connection_moves_to_the_backup_at_once_without_retrying(
        start_bridge, upstream, client):
    b = start_bridge(one_route(
        ("primary", dead_url()), ("backup", upstream.url),
        extra="retry: {attempts: 3, backoff: {initial: 500ms, max: 1s, jitter: none}}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert r.headers["x-bridge-attempts"] == "2"
    assert elapsed < 0.4  # a retry on the refused primary would have waited 500 ms first
    assert len(upstream.calls) == 1
    assert tries(flow_event(b, r)) == [("primary", "connect"), ("backup", "ok")]


def test_a_body_cut_before_anything_reached_the_client_moves_to_the_backup(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()

    async def cut(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b'{"partial": "' + b"x" * 100)
        request.transport.close()
        return resp

    primary.on("/v1/x", cut)
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url)))
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.json()["path"] == "/v1/x"  # the backup's complete body, never the cut one
    assert r.headers["x-bridge-upstream"] == "backup"
    assert r.headers["x-bridge-attempts"] == "2"
    assert len(primary.calls) == 1 and len(backup.calls) == 1
    assert tries(flow_event(b, r)) == [("primary", "reset"), ("backup", "ok")]


def test_a_connection_dropped_before_headers_moves_a_get_on_but_not_a_post(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", drop_before_headers)
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url)))
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert tries(flow_event(b, r)) == [("primary", "reset"), ("backup", "ok")]
    assert len(backup.calls) == 1
    # a POST may have reached the upstream: it is not sent anywhere again
    before = len(primary.calls)
    r = client.post(b.url("api") + "/v1/x", content=b"pay once")
    assert r.status_code == 502
    assert r.headers["x-bridge-error"] == "upstream_reset"
    assert r.headers["x-bridge-attempts"] == "1"
    assert len(primary.calls) == before + 1
    assert len(backup.calls) == 1


def test_one_try_reaches_the_upstream_once_even_when_the_connection_drops(
        start_bridge, upstream, client):
    upstream.on("/v1/x", drop_before_headers)
    b = start_bridge(one_route(("primary", upstream.url)))  # no retry: one try per upstream
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 502
    assert r.headers["x-bridge-error"] == "upstream_reset"
    assert r.headers["x-bridge-attempts"] == "1"
    assert tries(flow_event(b, r)) == [("primary", "reset")]
    assert len(upstream.calls) == 1  # what the upstream saw matches x-bridge-attempts


# --- retries ---------------------------------------------------------------------------------


def test_each_upstream_gets_retry_attempts_tries_with_exponential_backoff_before_fallback(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    stamps: list[float] = []
    primary.on("/v1/x", answer(503, stamps=stamps))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="retry: {attempts: 3, backoff: {initial: 50ms, max: 1s, jitter: none}}"))
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert r.headers["x-bridge-attempts"] == "4"
    assert len(primary.calls) == 3 and len(backup.calls) == 1
    gaps = [b2 - a for a, b2 in zip(stamps, stamps[1:], strict=False)]
    assert gaps[0] >= 0.045  # initial
    assert gaps[1] >= 0.095  # doubled
    assert tries(flow_event(b, r)) == [("primary", "503")] * 3 + [("backup", "ok")]


def test_backoff_is_capped_at_max_and_equal_jitter_waits_at_least_half(
        start_bridge, upstream, client):
    stamps: list[float] = []
    upstream.on("/v1/x", answer(503, stamps=stamps))
    b = start_bridge(one_route(
        ("primary", upstream.url),
        extra="retry: {attempts: 4, backoff: {initial: 80ms, max: 120ms, jitter: equal}}"))
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 503
    assert r.headers["x-bridge-attempts"] == "4"
    assert len(stamps) == 4
    gaps = [b2 - a for a, b2 in zip(stamps, stamps[1:], strict=False)]
    # ceilings 80 ms, then 160 and 320 ms capped to 120 ms; equal jitter waits half to all
    for gap, ceiling in zip(gaps, (0.08, 0.12, 0.12), strict=True):
        assert ceiling / 2 - 0.005 <= gap <= ceiling + 0.05, gaps


def test_a_status_not_in_retry_on_is_returned_as_is(start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(500))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="retry: {attempts: 3, on: [503], backoff: {initial: 10ms}}"))
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 500
    assert r.json() == {"answered": 500}  # the upstream's own answer, not bridge's
    assert "x-bridge-error" not in r.headers
    assert r.headers["x-bridge-upstream"] == "primary"
    assert r.headers["x-bridge-attempts"] == "1"
    assert len(primary.calls) == 1 and len(backup.calls) == 0
    assert tries(flow_event(b, r)) == [("primary", "ok")]


@pytest.mark.parametrize("listed", [True, False], ids=["connect-listed", "connect-not-listed"])
def test_the_connect_word_in_retry_on_decides_whether_a_refusal_moves_on(
        start_bridge, upstream, client, listed):
    on = "[503, connect]" if listed else "[503]"
    b = start_bridge(one_route(("primary", dead_url()), ("backup", upstream.url),
                            extra=f"retry: {{attempts: 2, on: {on}, backoff: {{initial: 10ms}}}}"))
    r = client.get(b.url("api") + "/v1/x")
    if listed:
        assert r.status_code == 200
        assert r.headers["x-bridge-upstream"] == "backup"
        assert len(upstream.calls) == 1
    else:
        assert r.status_code == 502
        assert r.headers["x-bridge-error"] == "upstream_unreachable"
        assert r.headers["x-bridge-attempts"] == "1"
        assert len(upstream.calls) == 0


@pytest.mark.parametrize("listed", [True, False], ids=["timeout-listed", "timeout-not-listed"])
def test_the_timeout_word_in_retry_on_decides_whether_a_timeout_moves_on(
        start_bridge, upstream_factory, client, listed):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", hanging(3))
    on = "[503, timeout]" if listed else "[503]"
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra=f"timeout: {{connect: 1s, total: 300ms}}\n"
              f"retry: {{attempts: 1, on: {on}}}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 1.5
    assert len(primary.calls) == 1
    if listed:
        assert r.status_code == 200
        assert r.headers["x-bridge-upstream"] == "backup"
        assert r.headers["x-bridge-attempts"] == "2"
        assert len(backup.calls) == 1
        assert tries(flow_event(b, r)) == [("primary", "timeout"), ("backup", "ok")]
    else:
        assert r.status_code == 504
        assert r.headers["x-bridge-error"] == "upstream_timeout"
        assert len(backup.calls) == 0


# --- non-idempotent methods and bodies ---------------------------------------------------------

BODY = bytes(range(256)) * 40 + b"\r\n\x00end"  # binary, every byte value, 10 KiB


def test_a_post_is_not_retried_after_a_503_by_default(start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(503))
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url),
                            extra="retry: {attempts: 3, backoff: {initial: 10ms}}"))
    r = client.post(b.url("api") + "/v1/x", content=BODY)
    assert r.status_code == 503
    assert r.json() == {"answered": 503}
    assert r.headers["x-bridge-upstream"] == "primary"
    assert r.headers["x-bridge-attempts"] == "1"
    assert len(primary.calls) == 1 and len(backup.calls) == 0


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_post_listed_in_retry_methods_is_retried_with_its_body_intact_on_every_try(
        start_bridge, upstream_factory, client, framing):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(503))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="retry: {attempts: 3, methods: [POST], backoff: {initial: 10ms}}"))
    content = BODY if framing == "content-length" else iter([BODY[:3000], BODY[3000:]])
    r = client.post(b.url("api") + "/v1/x", content=content,
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert r.headers["x-bridge-attempts"] == "4"
    assert len(primary.calls) == 3 and len(backup.calls) == 1
    for call in primary.calls + backup.calls:
        assert call.method == "POST"
        assert call.body == BODY
        assert call.headers["Content-Length"] == str(len(BODY))


def test_a_post_whose_connection_was_refused_moves_to_the_backup(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", dead_url()), ("backup", upstream.url),
                            extra="retry: {attempts: 2, backoff: {initial: 10ms}}"))
    r = client.post(b.url("api") + "/v1/x", content=BODY)
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(upstream.calls) == 1
    assert upstream.calls[0].body == BODY
    assert tries(flow_event(b, r)) == [("primary", "connect"), ("backup", "ok")]


# --- Retry-After ---------------------------------------------------------------------------------


def _once_429_then_ok(stamps: list, retry_after):
    async def handler(request):
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            value = retry_after() if callable(retry_after) else retry_after
            return web.json_response({"answered": 429}, status=429,
                                     headers={"Retry-After": value})
        return web.json_response({"answered": 200})

    return handler


def test_retry_after_in_seconds_is_waited_for(start_bridge, upstream, client):
    stamps: list[float] = []
    upstream.on("/v1/x", _once_429_then_ok(stamps, "1"))
    b = start_bridge(one_route(("primary", upstream.url),
                            extra="retry: {attempts: 2, backoff: {initial: 10ms, max: 5s}}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert time.monotonic() - t0 >= 1.0
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.98
    assert r.headers["x-bridge-attempts"] == "2"
    assert tries(flow_event(b, r)) == [("primary", "429"), ("primary", "ok")]


def test_retry_after_as_an_http_date_is_waited_for(start_bridge, upstream, client):
    stamps: list[float] = []
    # An HTTP date has whole seconds: now+2s, truncated, is between 1 and 2 s away.
    upstream.on("/v1/x", _once_429_then_ok(
        stamps, lambda: formatdate(time.time() + 2, usegmt=True)))
    b = start_bridge(one_route(("primary", upstream.url),
                            extra="retry: {attempts: 2, backoff: {initial: 10ms, max: 5s}}"))
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.9
    assert r.headers["x-bridge-attempts"] == "2"


def test_a_retry_after_beyond_backoff_max_returns_the_429_at_once_when_nothing_is_left(
        start_bridge, upstream, client):
    stamps: list[float] = []
    upstream.on("/v1/x", answer(429, headers={"Retry-After": "30"}, stamps=stamps))
    b = start_bridge(one_route(("primary", upstream.url),
                            extra="retry: {attempts: 3, backoff: {initial: 10ms, max: 1s}}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 0.5
    assert r.status_code == 429
    assert r.headers["retry-after"] == "30"  # the upstream's answer, for the app to honour
    assert "x-bridge-error" not in r.headers
    assert r.headers["x-bridge-attempts"] == "1"
    assert len(stamps) == 1


def test_a_retry_after_beyond_backoff_max_moves_to_the_backup_at_once(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(429, headers={"Retry-After": "30"}))
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url),
                            extra="retry: {attempts: 3, backoff: {initial: 10ms, max: 1s}}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 0.5
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(primary.calls) == 1 and len(backup.calls) == 1
    assert tries(flow_event(b, r)) == [("primary", "429"), ("backup", "ok")]


def test_respect_retry_after_false_uses_the_backoff_instead(start_bridge, upstream, client):
    stamps: list[float] = []
    upstream.on("/v1/x", _once_429_then_ok(stamps, "30"))
    b = start_bridge(one_route(
        ("primary", upstream.url),
        extra="retry: {attempts: 2, respect_retry_after: false,"
              " backoff: {initial: 10ms, max: 1s}}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 0.5
    assert r.status_code == 200
    assert len(stamps) == 2


# --- retry budget --------------------------------------------------------------------------------


def test_the_retry_budget_bounds_tries_against_a_dead_upstream(start_bridge, upstream, client):
    upstream.on("/v1/x", answer(503))
    b = start_bridge(one_route(
        ("primary", upstream.url),
        extra="retry: {attempts: 3, budget: 10%, budget_floor: 1/s,"
              " backoff: {initial: 1ms, max: 2ms}}"))
    n = 40
    attempts = []
    for _ in range(n):
        r = client.get(b.url("api") + "/v1/x")
        assert r.status_code == 503  # the last failure seen, also when the budget refuses
        attempts.append(int(r.headers["x-bridge-attempts"]))
    # The first request on a quiet route keeps its configured tries (the floor)...
    assert attempts[0] == 3
    # ...but retries over 10 s are capped at 10% of requests plus 1/s * 10 s.
    max_retries = int(0.10 * n + 1 * 10)
    assert len(upstream.calls) == sum(attempts)
    assert n <= len(upstream.calls) <= n + max_retries  # 54, not 3 * 40 = 120
    budget = next(r for r in b.control().status()["routes"])["retry_budget"]
    assert budget["refused"] > 0
    assert budget["retries_10s"] <= max_retries


# --- timeouts --------------------------------------------------------------------------------------


def test_a_hanging_upstream_gives_504_upstream_timeout_within_the_total(
        start_bridge, upstream, client):
    upstream.on("/v1/x", hanging(3))
    b = start_bridge(one_route(("primary", upstream.url),
                            extra="timeout: {connect: 1s, total: 300ms}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    elapsed = time.monotonic() - t0
    assert 0.28 <= elapsed < 1.0
    assert r.status_code == 504
    assert r.headers["x-bridge-error"] == "upstream_timeout"
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["type"] == "upstream_timeout"
    assert len(upstream.calls) == 1
    assert tries(flow_event(b, r)) == [("primary", "timeout")]


def test_a_connect_timeout_moves_on_after_timeout_connect_not_total(
        start_bridge, blackhole, upstream, client):
    b = start_bridge(one_route(("primary", blackhole.url), ("backup", upstream.url),
                            extra="timeout: {connect: 200ms, total: 3s}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 1.0
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert r.headers["x-bridge-attempts"] == "2"


def test_an_expired_connect_timeout_counts_as_timeout_and_gives_504(
        start_bridge, blackhole, client):
    b = start_bridge(one_route(("primary", blackhole.url),
                            extra="timeout: {connect: 200ms, total: 3s}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 1.0
    assert tries(flow_event(b, r)) == [("primary", "timeout")]
    assert r.status_code == 504
    assert r.headers["x-bridge-error"] == "upstream_timeout"
    assert r.json()["error"]["type"] == "upstream_timeout"


def test_a_post_whose_connection_never_opened_moves_to_the_backup(
        start_bridge, blackhole, upstream, client):
    b = start_bridge(one_route(("primary", blackhole.url), ("backup", upstream.url),
                            extra="timeout: {connect: 200ms, total: 3s}"))
    r = client.post(b.url("api") + "/v1/x", content=BODY)
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(upstream.calls) == 1 and upstream.calls[0].body == BODY


def test_a_buffered_body_that_stalls_after_the_headers_times_out_and_moves_on(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()

    async def stall_body(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 100
        await resp.prepare(request)
        await resp.write(b'{"partial": ')
        await hang(request, 3)
        return resp

    primary.on("/v1/x", stall_body)
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url),
                            extra="timeout: {connect: 1s, total: 300ms}"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 1.0
    assert r.status_code == 200
    assert r.json()["path"] == "/v1/x"
    assert tries(flow_event(b, r)) == [("primary", "timeout"), ("backup", "ok")]


def test_a_stream_that_stalls_after_the_first_event_ends_with_an_in_band_sse_error(
        start_bridge, upstream, client):
    async def stall(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await hang(request, 3)
        return resp

    upstream.on("/sse", stall)
    b = start_bridge(one_route(("primary", upstream.url),
                            extra="timeout: {connect: 1s, total: 300ms}"))
    t0 = time.monotonic()
    r, lines = sse_lines(client, b.url("api") + "/sse")
    assert time.monotonic() - t0 < 1.5
    assert r.status_code == 200
    assert lines[0] == "data: one"
    assert "event: error" in lines  # not a clean end
    data = next(line for line in lines if line.startswith("data: {"))
    assert json.loads(data.removeprefix("data: "))["error"]["type"] == "upstream_timeout"
    ev = flow_event(b, r)
    assert ev.streamed and ev.error  # recorded as a broken stream, not a success


def test_a_stream_with_short_idle_gaps_is_not_cut_by_the_total_timeout(
        start_bridge, upstream, client):
    upstream.on("/sse", counting_sse(6, gap=0.15))
    b = start_bridge(one_route(("primary", upstream.url),
                            extra="timeout: {connect: 1s, total: 300ms}"))
    t0 = time.monotonic()
    r, lines = sse_lines(client, b.url("api") + "/sse")
    assert time.monotonic() - t0 >= 0.75  # the whole stream outlasted `total`
    assert [line for line in lines if line] == [f"data: {i}" for i in range(6)]
    assert not any(line.startswith("event: error") for line in lines)
    ev = flow_event(b, r)
    assert ev.streamed and ev.error is None


def test_a_stream_that_breaks_after_it_started_is_never_retried(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()

    async def breaks(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await asyncio.sleep(0.05)
        request.transport.close()
        return resp

    primary.on("/sse", breaks)
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="retry: {attempts: 3, on: [502, 503, connect, reset, timeout],"
              " backoff: {initial: 10ms}}"))
    r, lines = sse_lines(client, b.url("api") + "/sse")
    assert r.headers["x-bridge-upstream"] == "primary"
    assert r.headers["x-bridge-attempts"] == "1"
    assert lines[0] == "data: one"
    assert "event: error" in lines
    time.sleep(0.2)  # on purpose: nothing further may be tried in this while after the break
    assert len(primary.calls) == 1 and len(backup.calls) == 0
    assert tries(flow_event(b, r)) == [("primary", "ok")]


# --- strategies --------------------------------------------------------------------------------------


def test_weighted_3_to_1_splits_1000_requests_within_5_points(
        start_bridge, upstream_factory, client):
    a, c = upstream_factory(), upstream_factory()
    b = start_bridge(one_route(("a", a.url, 3), ("c", c.url, 1), extra="strategy: weighted"))
    url = b.url("api") + "/v1/x"
    with ThreadPoolExecutor(16) as pool:
        picks = list(pool.map(lambda _: client.get(url).headers["x-bridge-upstream"],
                              range(1000)))
    counts = Counter(picks)
    assert counts["a"] + counts["c"] == 1000
    assert len(a.calls) == counts["a"] and len(c.calls) == counts["c"]
    assert 0.70 <= counts["a"] / 1000 <= 0.80, counts


def test_round_robin_rotates_exactly(start_bridge, upstream_factory, client):
    ups = [upstream_factory() for _ in range(3)]
    b = start_bridge(one_route(*[(n, u.url) for n, u in zip("xyz", ups, strict=True)],
                            extra="strategy: round_robin"))
    picks = [client.get(b.url("api") + "/v1/x").headers["x-bridge-upstream"] for _ in range(12)]
    assert picks == list("xyz") * 4
    assert [len(u.calls) for u in ups] == [4, 4, 4]


def test_least_latency_prefers_the_fast_upstream_but_still_probes_the_slow_one(
        start_bridge, upstream_factory, client):
    fast, slow = upstream_factory(), upstream_factory()
    fast.on("/v1/x", answer(200, delay=0.005))
    slow.on("/v1/x", answer(200, delay=0.06))
    b = start_bridge(one_route(("fast", fast.url), ("slow", slow.url),
                            extra="strategy: least_latency"))
    n = 200
    picks = Counter(client.get(b.url("api") + "/v1/x").headers["x-bridge-upstream"]
                    for _ in range(n))
    assert picks["fast"] + picks["slow"] == n
    assert picks["fast"] >= 0.85 * n, picks
    # one call measures the unmeasured slow upstream; more than that are probes
    assert len(slow.calls) >= 2, picks


@pytest.mark.parametrize("strategy", ["round_robin", "weighted"])
def test_every_strategy_skips_an_upstream_whose_breaker_is_open(
        start_bridge, upstream_factory, client, strategy):
    ups = [upstream_factory() for _ in range(3)]
    ups[1].on("/v1/x", answer(503))
    b = start_bridge(one_route(
        *[(n, u.url) for n, u in zip("xyz", ups, strict=True)],
        extra=f"strategy: {strategy}\n"
              "breaker: {failure_rate: 50%, window: 2, min_calls: 2, open_for: 30s}"))
    url = b.url("api") + "/v1/x"
    for _ in range(100):  # y fails (the request falls back) until its breaker opens
        assert client.get(url).status_code == 200
        if breaker_moves(b, "y"):
            break
    assert breaker_moves(b, "y") == [("closed", "open")]
    assert len(ups[1].calls) == 2
    picks = [client.get(url).headers["x-bridge-upstream"] for _ in range(30)]
    assert len(ups[1].calls) == 2
    assert "y" not in picks and set(picks) == {"x", "z"}


# --- circuit breakers ----------------------------------------------------------------------------

OPEN_FOR = 30.0  # seconds: these tests move the bridge's ManualClock through it
BREAKER = (f"breaker: {{failure_rate: 50%, window: 4, min_calls: 4, open_for: {OPEN_FOR:g}s,"
           " half_open_calls: 2}")


def _open_primary(b, client, primary, n: int = 4) -> None:
    for _ in range(n):
        r = client.get(b.url("api") + "/v1/x")
        assert r.status_code == 200 and r.headers["x-bridge-upstream"] == "backup"
    _wait_for(lambda: ("closed", "open") in breaker_moves(b, "primary"))
    assert len(primary.calls) == n


def test_a_breaker_opens_skips_the_upstream_then_half_opens_and_closes_after_good_trials(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    state = {"status": 503}
    primary.on("/v1/x", switchable(state))
    clock = ManualClock()
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url), extra=BREAKER),
                     clock=clock)
    _open_primary(b, client, primary)
    assert breaker_moves(b) == [("closed", "open")]

    # open: the primary gets no call at all; the request goes straight to the backup
    clock.advance(OPEN_FOR - 1)  # still inside open_for
    for _ in range(3):
        r = client.get(b.url("api") + "/v1/x")
        assert r.status_code == 200
        assert r.headers["x-bridge-upstream"] == "backup"
        assert r.headers["x-bridge-attempts"] == "1"
    assert len(primary.calls) == 4
    assert tries(flow_event(b, r)) == [("primary", "breaker_open"), ("backup", "ok")]

    # after open_for: half-open, two good trials close it
    state["status"] = 200
    clock.advance(1)
    r1 = client.get(b.url("api") + "/v1/x")
    assert r1.headers["x-bridge-upstream"] == "primary"
    assert breaker_moves(b, "primary")[-1] == ("open", "half_open")
    r2 = client.get(b.url("api") + "/v1/x")
    assert r2.headers["x-bridge-upstream"] == "primary"
    _wait_for(lambda: breaker_moves(b, "primary")[-1] == ("half_open", "closed"))
    assert breaker_moves(b, "primary") == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert len(primary.calls) == 6
    assert upstream_status(b)["primary"]["breaker"]["state"] == "closed"


def test_a_failed_half_open_trial_reopens_the_breaker(start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(503))
    clock = ManualClock()
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url), extra=BREAKER),
                     clock=clock)
    _open_primary(b, client, primary)
    clock.advance(OPEN_FOR)
    r = client.get(b.url("api") + "/v1/x")
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(primary.calls) == 5  # exactly one trial
    assert tries(flow_event(b, r)) == [("primary", "503"), ("backup", "ok")]
    assert breaker_moves(b, "primary") == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    # open again: no call
    r = client.get(b.url("api") + "/v1/x")
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(primary.calls) == 5
    assert upstream_status(b)["primary"]["breaker"]["state"] == "open"
    assert upstream_status(b)["primary"]["breaker"]["opens"] == 2


def test_with_every_breaker_open_the_client_gets_503_all_upstreams_unavailable_at_once(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(503))
    backup.on("/v1/x", answer(503))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="breaker: {failure_rate: 50%, window: 2, min_calls: 2, open_for: 30s}"))
    for _ in range(2):
        r = client.get(b.url("api") + "/v1/x")
        assert r.status_code == 503 and "x-bridge-error" not in r.headers  # the upstream's 503
    _wait_for(lambda: len(breaker_moves(b)) == 2)
    assert {(e.upstream, e.new) for e in b.events() if e.kind == "breaker"} == {
        ("primary", "open"), ("backup", "open")}
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 0.1
    assert r.status_code == 503
    assert r.headers["x-bridge-error"] == "all_upstreams_unavailable"
    assert r.json()["error"]["type"] == "all_upstreams_unavailable"
    assert r.headers["x-bridge-attempts"] == "0"
    assert len(primary.calls) == 2 and len(backup.calls) == 2
    assert tries(flow_event(b, r)) == [("primary", "breaker_open"), ("backup", "breaker_open")]


def test_half_open_lets_exactly_half_open_calls_trials_through(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    state = {"status": 503}

    async def slow_switch(request):
        if state["status"] == 200:
            await asyncio.sleep(0.2)  # the trials are still running when the others arrive
        return web.json_response({"answered": state["status"]}, status=state["status"])

    primary.on("/v1/x", slow_switch)
    clock = ManualClock()
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url), extra=BREAKER),
                     clock=clock)
    _open_primary(b, client, primary)
    state["status"] = 200
    clock.advance(OPEN_FOR)
    url = b.url("api") + "/v1/x"
    with ThreadPoolExecutor(8) as pool:
        picks = Counter(pool.map(lambda _: client.get(url).headers["x-bridge-upstream"],
                                 range(8)))
    assert len(primary.calls) == 4 + 2  # two trials, however many requests came
    assert picks == Counter({"primary": 2, "backup": 6})
    assert breaker_moves(b, "primary")[-1] == ("half_open", "closed")


def test_a_429_counts_against_the_breaker_by_default(start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(429))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="breaker: {failure_rate: 50%, window: 2, min_calls: 2, open_for: 30s}"))
    for _ in range(2):
        assert client.get(b.url("api") + "/v1/x").headers["x-bridge-upstream"] == "backup"
    _wait_for(lambda: breaker_moves(b, "primary") == [("closed", "open")])
    client.get(b.url("api") + "/v1/x")
    assert len(primary.calls) == 2


def test_failure_statuses_decide_what_counts_against_the_breaker(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    state = {"status": 503}
    primary.on("/v1/x", switchable(state))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="retry: {attempts: 1, on: [500, 503]}\n"
              "breaker: {failure_rate: 50%, window: 4, min_calls: 4, open_for: 30s,"
              " failure_statuses: [500]}"))
    for _ in range(6):  # 503 moves the request on, but is not a failure for this breaker
        assert client.get(b.url("api") + "/v1/x").headers["x-bridge-upstream"] == "backup"
    assert len(primary.calls) == 6
    assert breaker_moves(b) == []
    snap = upstream_status(b)["primary"]["breaker"]
    assert snap["state"] == "closed" and snap["failures"] == 0 and snap["calls"] == 4
    state["status"] = 500
    for _ in range(2):  # window [503, 503, 500, 500]: 2/4 failed reaches 50%
        client.get(b.url("api") + "/v1/x")
    _wait_for(lambda: breaker_moves(b, "primary") == [("closed", "open")])
    r = client.get(b.url("api") + "/v1/x")
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(primary.calls) == 8


def test_slow_calls_open_the_breaker(start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(200, delay=0.08))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="timeout: 5s\n"
              "breaker: {failure_rate: 50%, window: 4, min_calls: 4, open_for: 30s,"
              " slow_call: {duration: 50ms, rate: 50%}}"))
    for _ in range(4):  # slow but successful: the client gets the primary's answer
        r = client.get(b.url("api") + "/v1/x")
        assert r.status_code == 200 and r.headers["x-bridge-upstream"] == "primary"
    _wait_for(lambda: breaker_moves(b, "primary") == [("closed", "open")])
    reason = next(e.reason for e in b.events() if e.kind == "breaker")
    assert "slow" in reason
    r = client.get(b.url("api") + "/v1/x")
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(primary.calls) == 4


def test_bridge_status_shows_breaker_state_and_counts_per_upstream(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(503))
    b = start_bridge(one_route(
        ("primary", primary.url), ("backup", backup.url),
        extra="breaker: {failure_rate: 50%, window: 4, min_calls: 4, open_for: 30s}"))
    _open_primary(b, client, primary)
    client.get(b.url("api") + "/v1/x")
    _wait_for(lambda: b.control().status()["routes"][0]["requests"] == 5)
    ups = upstream_status(b)
    p, k = ups["primary"]["breaker"], ups["backup"]["breaker"]
    assert p["state"] == "open" and p["opens"] == 1
    assert p["calls"] == 4 and p["failures"] == 4 and p["failure_rate"] == 1.0
    assert 25 < p["open_remaining_s"] <= 30
    assert k["state"] == "closed" and k["failures"] == 0
    assert k["calls"] == 4  # the window holds the last 4 of its 5 calls
    assert ups["backup"]["requests"] == 5
    # the CLI shows the same document
    out = bridge_cmd(["status", "--json"], free_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    cli_ups = {u["name"]: u for u in json.loads(out.stdout)["routes"][0]["upstreams"]}
    assert cli_ups["primary"]["breaker"]["state"] == "open"
    assert cli_ups["primary"]["breaker"]["failures"] == 4


def test_an_open_breaker_survives_a_restart(start_bridge, upstream_factory, client, bridge_home):
    primary, backup = upstream_factory(), upstream_factory()
    primary.on("/v1/x", answer(503))
    text = one_route(("primary", primary.url), ("backup", backup.url),
                  extra="breaker: {failure_rate: 50%, window: 4, min_calls: 4, open_for: 20s}")
    b = start_bridge(text)
    _open_primary(b, client, primary)
    b.stop()  # at once: the open state must already be safe in the store

    b2 = start_bridge(text)
    assert b2.home == bridge_home
    r = client.get(b2.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert len(primary.calls) == 4  # still open: no call
    assert tries(flow_event(b2, r)) == [("primary", "breaker_open"), ("backup", "ok")]
    p = upstream_status(b2)["primary"]["breaker"]
    assert p["state"] == "open" and 0 < p["open_remaining_s"] <= 20


# --- the client going away ---------------------------------------------------------------------


def test_the_attempt_loop_stops_when_the_client_goes_away(start_bridge, upstream, client):
    upstream.on("/v1/x", answer(503))
    b = start_bridge(one_route(
        ("primary", upstream.url),
        extra="retry: {attempts: 10, backoff: {initial: 200ms, max: 200ms, jitter: none}}"))
    with httpx.Client(trust_env=False, timeout=0.3) as impatient:
        with pytest.raises(httpx.TimeoutException):
            impatient.get(b.url("api") + "/v1/x")
    at_give_up = len(upstream.calls)
    assert 1 <= at_give_up <= 3
    # The flow is published once the attempt loop has returned: at once when it stops for
    # the gone client, after all 10 tries (~2 s) when it does not.
    ev = _wait_for(lambda: next((e for e in b.events() if e.kind == "flow"), None),
                   what="the flow of the abandoned request")
    assert len(ev.tries) <= at_give_up + 1
    assert len(upstream.calls) <= at_give_up + 1

