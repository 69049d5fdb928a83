"""CacheAddon and KeepAddon alone: a miss, keeping the answer behind the request, hits,
coalescing, offline replay and misses, and what is never kept. Real diskcache stores in
tmp_path, a ManualClock for ages and TTLs; helpers shared with test_addons.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy.test import taddons

from bridge_cli.engine.cache import ReplayMode
from bridge_cli.engine.clock import ManualClock
from bridge_cli.engine.coalesce import InFlight
from bridge_cli.engine.streams import Capture
from bridge_cli.proxy.addons.cache import CacheAddon
from bridge_cli.proxy.addons.chaos import HeaderFaultAddon
from bridge_cli.proxy.addons.keep import KeepAddon
from bridge_cli.proxy.addons.route import RouteAddon
from bridge_cli.proxy.cache_writer import CacheWriter
from bridge_cli.proxy.forwarder import Forwarder
from bridge_cli.store.responses import ResponseStores
from tests.test_addons import (
    ROUTES,
    a_request,
    arrive,
    config,
    error_of,
    live,
    st,
    upstream_answer,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def caching(tmp_path, clock):
    """`caching(mode)`: a CacheAddon and its KeepAddon over real stores in tmp_path (a
    second call is a restarted bridge on the same home); writers are drained at the end."""
    made: list[tuple[ResponseStores, KeepAddon]] = []

    def make(mode: ReplayMode = ReplayMode()) -> tuple[CacheAddon, KeepAddon]:
        stores = ResponseStores(tmp_path / "home")
        keep = KeepAddon(CacheWriter(stores, mode.cassette), InFlight(), clock)
        made.append((stores, keep))
        return CacheAddon(Forwarder(), stores, mode, keep, clock), keep

    yield make
    for stores, keep in made:
        keep.writer.close()
        stores.close()


async def drained(keep: KeepAddon) -> None:
    """Wait for the write-behind to reach the disk."""
    await asyncio.to_thread(keep.writer.close)


def stored(tmp_path, cassette: str | None = None) -> list[int]:
    """Statuses on disk in route api's cache (or in a cassette), read as a fresh bridge
    would read them."""
    stores = ResponseStores(tmp_path / "home")
    try:
        where = stores.cassette(cassette) if cassette else stores.cache("api")
        return [s["status"] for _, s in where.summaries()]
    finally:
        stores.close()


async def test_a_cacheable_request_is_planned_as_a_miss_that_captures_its_answer(caching):
    cache, keep = caching()
    f = arrive(config())
    with taddons.context(cache, keep):
        await cache.request(f)
    assert st(f).cache.status == "miss"
    assert f.response is None  # on to the upstream
    assert [type(o) for o in st(f).stream.observers] == [Capture]
    keep.response(f)  # (settles its place in flight)


async def test_a_kept_200_answers_the_next_identical_request_as_a_hit_with_its_age(
        caching, clock, tmp_path):
    cache, keep = caching()
    cfg = config()
    with taddons.context(cache, keep):
        first = arrive(cfg)
        await cache.request(first)
        first.response = upstream_answer(200, b'{"answer": 42}', etag='"v1"')
        keep.response(first)
        clock.advance(7)
        second = arrive(cfg)
        await cache.request(second)
    assert second.response.status_code == 200
    assert json.loads(second.response.content) == {"answer": 42}
    assert second.response.headers["x-bridge-cache"] == "hit"
    assert second.response.headers["age"] == "7"
    assert second.response.headers["etag"] == '"v1"'
    assert st(second).cache.status == "hit"
    await drained(keep)
    assert stored(tmp_path) == [200]


async def test_a_kept_answer_is_a_hit_for_a_restarted_bridge(caching, tmp_path):
    cache, keep = caching()
    cfg = config()
    with taddons.context(cache, keep):
        first = arrive(cfg)
        await cache.request(first)
        first.response = upstream_answer()
        keep.response(first)
    await drained(keep)
    restarted, _ = caching()
    second = arrive(cfg)
    with taddons.context(restarted):
        await restarted.request(second)
    assert second.response.headers["x-bridge-cache"] == "hit"
    assert json.loads(second.response.content) == {"answer": 42}


async def test_an_entry_older_than_its_ttl_is_a_miss(caching, clock):
    cache, keep = caching()
    cfg = config()
    with taddons.context(cache, keep):
        first = arrive(cfg)
        await cache.request(first)
        first.response = upstream_answer()
        keep.response(first)
        clock.advance(601)  # ttl: 10m
        second = arrive(cfg)
        await cache.request(second)
    assert second.response is None and st(second).cache.status == "miss"
    keep.response(second)


@pytest.mark.parametrize("spoil", ["fault fired", "bridge error", "status 500", "status 429"])
async def test_a_faulted_or_failed_answer_is_never_kept(caching, tmp_path, spoil):
    cache, keep = caching()
    cfg = config()
    with taddons.context(cache, keep):
        first = arrive(cfg)
        await cache.request(first)
        first.response = upstream_answer(int(spoil[-3:]) if "status" in spoil else 200)
        if spoil == "fault fired":
            st(first).faults.add(["garble"])
        elif spoil == "bridge error":
            st(first).error = "upstream_timeout"
        keep.response(first)
        second = arrive(cfg)
        await cache.request(second)
    assert second.response is None and st(second).cache.status == "miss"
    keep.response(second)
    await drained(keep)
    assert stored(tmp_path) == []


async def test_record_keeps_a_500_that_the_cache_never_stores(caching, tmp_path):
    recorder, keep = caching(ReplayMode(record=True, cassette="demo"))
    with taddons.context(recorder, keep):
        f = arrive(config())
        await recorder.request(f)
        f.response = upstream_answer(500, b'{"error": "boom"}')
        keep.response(f)
    await drained(keep)
    assert stored(tmp_path) == []
    assert stored(tmp_path, cassette="demo") == [500]  # an app's error handling replays


async def test_a_request_with_a_header_fault_skips_the_cache(caching):
    cfg = config(ROUTES % {"allow": "true"})
    f = arrive(cfg, headers={"x-bridge-fault": "status=503"})
    HeaderFaultAddon().request(f)
    cache, keep = caching()
    with taddons.context(cache, keep):
        await cache.request(f)
    assert st(f).cache.status is None and st(f).cache.pending is None
    assert st(f).stream.observers == []


async def test_an_identical_request_in_flight_waits_and_gets_the_leaders_answer(caching):
    cache, keep = caching()
    cfg = config()
    with taddons.context(cache, keep):
        leader, follower = arrive(cfg), arrive(cfg)
        await cache.request(leader)
        waiting = asyncio.ensure_future(cache.request(follower))
        await asyncio.sleep(0.01)
        assert not waiting.done() and follower.response is None
        leader.response = upstream_answer()
        keep.response(leader)
        await asyncio.wait_for(waiting, 5)
    assert follower.response.headers["x-bridge-cache"] == "coalesced"
    assert json.loads(follower.response.content) == {"answer": 42}


async def test_offline_with_nothing_recorded_answers_504_offline_miss(caching):
    cache, _ = caching(ReplayMode(offline=True, cassette="demo"))
    f = arrive(config())
    with taddons.context(cache):
        await cache.request(f)
    assert f.response.status_code == 504
    assert error_of(f) == "offline_miss"
    assert json.loads(f.response.content)["error"]["cassette"] == "demo"


async def test_offline_traffic_no_route_matches_answers_504_offline_miss(caching):
    cfg = config()
    f = a_request("http://elsewhere.test/x")
    RouteAddon(live(cfg)).request(f)
    cache, _ = caching(ReplayMode(offline=True))
    with taddons.context(cache):
        await cache.request(f)
    assert f.response.status_code == 504 and error_of(f) == "offline_miss"


async def test_a_recorded_answer_is_replayed_offline(caching):
    cfg = config()
    recorder, keep = caching(ReplayMode(record=True, cassette="demo"))
    with taddons.context(recorder, keep):
        f = arrive(cfg, headers={"authorization": "Bearer sk-recorder"})
        await recorder.request(f)
        f.response = upstream_answer()
        keep.response(f)
    await drained(keep)
    offline, _ = caching(ReplayMode(offline=True, cassette="demo"))
    f = arrive(cfg, headers={"authorization": "Bearer sk-someone-else"})  # a shared cassette
    with taddons.context(offline):
        await offline.request(f)
    assert f.response.status_code == 200
    assert f.response.headers["x-bridge-cache"] == "replay"
    assert json.loads(f.response.content) == {"answer": 42}
