"""The response cache, coalescing and record/offline replay end to end: a real bridge
between real upstreams (which count their calls) and real clients (httpx, the official
openai SDK, the `bridge` CLI as a subprocess).

Every test asserts on what the upstream received (`.calls`) as well as on what the client
got, so a cache that silently does nothing, or answers wrongly, fails.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from bridge_cli.common.entry import FORMAT
from bridge_cli.engine.cache import ReplayMode
from bridge_cli.engine.clock import ManualClock
from bridge_cli.store.responses import EntryStore
from tests.conftest import (
    bridge_cmd,
    cli_env,
    config_yaml,
    control_get,
    flow_event,
    route_yaml,
    start_up,
    stop,
    wait_for,
)

TOKEN_A = "sk-proj-AliceAliceAlice0123456789abcdef"
TOKEN_B = "sk-proj-BobBobBobBob9876543210fedcba"
USERS = {f"Bearer {TOKEN_A}": "alice", f"Bearer {TOKEN_B}": "bob"}


# --- helpers -------------------------------------------------------------------------------


def route(name: str, url: str, cache: str | None = None) -> str:
    """A route to one upstream (`up`); `cache` is the flow mapping of `cache:` ("{}" for
    defaults, None for no cache)."""
    return route_yaml(name, ("up", url), cache=cache)


def numbered(upstream, path: str, *, status: int = 200, headers: dict | None = None,
             delay: float = 0.0, extra=None) -> None:
    """Serve `path` with a JSON body numbering the upstream's calls to it, so a client can
    tell a fresh answer (n = calls so far) from a stored one."""

    async def handler(request: web.Request) -> web.Response:
        n = calls(upstream, path)
        if delay:
            await asyncio.sleep(delay)
        body = {"n": n, "path": request.path_qs}
        if extra is not None:
            body.update(extra(request))
        return web.json_response(body, status=status, headers=headers)

    upstream.on(path, handler)


def calls(upstream, path: str) -> int:
    return sum(1 for c in upstream.calls if c.path.partition("?")[0] == path)


def settled(b) -> None:
    """Wait until the bridge's write-behind has put every kept response on disk."""

    def done() -> bool:
        try:
            return all(not es.unwritten for es in list(b.bridge.responses._open.values()))
        except RuntimeError:  # the dict changed while we looked
            return False

    wait_for(done, what="cache writes on disk")


def cache_of(r: httpx.Response) -> str | None:
    return r.headers.get("x-bridge-cache")


def on_disk(directory: Path) -> list[dict]:
    """The summaries of what a response store (cache namespace, cassette) holds on disk,
    read through a second handle as another process would; [] before it exists."""
    if not directory.exists():
        return []
    es = EntryStore(directory)
    try:
        return [summary for _, summary in es.summaries()]
    finally:
        es.close()


# --- hits, misses, age, ttl ---------------------------------------------------------------------


def test_miss_then_hit_with_age_until_the_ttl_expires(start_bridge, upstream, client):
    numbered(upstream, "/v1/models")
    clock = ManualClock()
    b = start_bridge(config_yaml(route("api", upstream.url, "{ttl: 2s}")), clock=clock)
    url = b.url("api") + "/v1/models"
    first = client.get(url)
    assert first.status_code == 200 and cache_of(first) == "miss"
    assert "age" not in first.headers and first.json()["n"] == 1

    hit = client.get(url)
    assert hit.status_code == 200 and cache_of(hit) == "hit"
    assert hit.json() == first.json() and hit.headers["content-type"] == first.headers["content-type"]
    assert hit.headers["age"] == "0"
    assert calls(upstream, "/v1/models") == 1
    assert flow_event(b, hit).cache == "hit" and flow_event(b, first).cache == "miss"

    clock.advance(1.1)
    older = client.get(url)
    assert cache_of(older) == "hit" and older.headers["age"] == "1"
    clock.advance(1.0)  # past the 2 s ttl
    expired = client.get(url)
    assert cache_of(expired) == "miss" and expired.json()["n"] == 2
    assert calls(upstream, "/v1/models") == 2
    again = client.get(url)
    assert cache_of(again) == "hit" and again.json()["n"] == 2


def test_no_cache_and_refresh_refetch_and_update_the_entry(start_bridge, upstream, client):
    numbered(upstream, "/r")
    b = start_bridge(config_yaml(route("api", upstream.url, "{}")))
    url = b.url("api") + "/r"
    assert client.get(url).json()["n"] == 1
    assert cache_of(client.get(url)) == "hit"

    fresh = client.get(url, headers={"Cache-Control": "no-cache"})
    assert fresh.json()["n"] == 2 and cache_of(fresh) == "refresh"
    settled(b)
    after = client.get(url)
    assert cache_of(after) == "hit" and after.json()["n"] == 2  # the NEW body

    forced = client.get(url, headers={"x-bridge-cache": "refresh"})
    assert forced.json()["n"] == 3 and cache_of(forced) == "refresh"
    settled(b)
    after = client.get(url)
    assert cache_of(after) == "hit" and after.json()["n"] == 3
    assert calls(upstream, "/r") == 3


# --- what the key is made of ----------------------------------------------------------------------


def test_query_order_and_json_canonicalisation_hit_a_different_body_misses(
        start_bridge, upstream, client):
    numbered(upstream, "/q")
    numbered(upstream, "/v1/chat")
    b = start_bridge(config_yaml(route("api", upstream.url, "{methods: [GET, POST]}")))
    base = b.url("api")
    assert cache_of(client.get(base + "/q?a=1&b=2")) == "miss"
    swapped = client.get(base + "/q?b=2&a=1")
    assert cache_of(swapped) == "hit" and swapped.json()["path"] == "/q?a=1&b=2"
    assert cache_of(client.get(base + "/q?a=1&b=3")) == "miss"
    assert calls(upstream, "/q") == 2

    compact = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0}'
    spaced = b'{\n  "temperature": 0,\n  "messages": [{"content": "hi", "role": "user"}],\n  "model": "gpt-4o"\n}'
    other = b'{"model":"gpt-4o","messages":[{"role":"user","content":"bye"}],"temperature":0}'
    ctype = {"content-type": "application/json"}
    assert cache_of(client.post(base + "/v1/chat", content=compact, headers=ctype)) == "miss"
    assert cache_of(client.post(base + "/v1/chat", content=spaced, headers=ctype)) == "hit"
    different = client.post(base + "/v1/chat", content=other, headers=ctype)
    assert cache_of(different) == "miss" and different.json()["n"] == 2
    assert calls(upstream, "/v1/chat") == 2


def test_ignore_query_and_ignore_body_fields_leave_volatile_parts_out(start_bridge, upstream, client):
    numbered(upstream, "/s")
    numbered(upstream, "/v1/chat")
    b = start_bridge(config_yaml(route(
        "api", upstream.url,
        "{methods: [GET, POST], ignore_query: [request_id], ignore_body_fields: [user, metadata.trace_id]}")))
    base = b.url("api")
    assert cache_of(client.get(base + "/s?q=x&request_id=1")) == "miss"
    assert cache_of(client.get(base + "/s?request_id=2&q=x")) == "hit"
    assert cache_of(client.get(base + "/s?q=y&request_id=1")) == "miss"  # q is not ignored
    assert calls(upstream, "/s") == 2

    def body(user, trace, team="core"):
        return {"model": "m", "user": user, "metadata": {"trace_id": trace, "team": team}}

    assert cache_of(client.post(base + "/v1/chat", json=body("u1", "t1"))) == "miss"
    assert cache_of(client.post(base + "/v1/chat", json=body("u2", "t2"))) == "hit"
    assert cache_of(client.post(base + "/v1/chat", json=body("u1", "t1", "ops"))) == "miss"
    assert calls(upstream, "/v1/chat") == 2


def test_vary_config_separates_entries_by_header(start_bridge, upstream, client):
    numbered(upstream, "/greet", extra=lambda r: {"lang": r.headers.get("Accept-Language")})
    b = start_bridge(config_yaml(route("api", upstream.url, "{vary: [accept-language]}")))
    url = b.url("api") + "/greet"
    en, de = {"Accept-Language": "en"}, {"Accept-Language": "de"}
    assert cache_of(client.get(url, headers=en)) == "miss"
    assert cache_of(client.get(url, headers=de)) == "miss"
    r_en, r_de = client.get(url, headers=en), client.get(url, headers=de)
    assert (cache_of(r_en), cache_of(r_de)) == ("hit", "hit")
    assert (r_en.json()["lang"], r_de.json()["lang"]) == ("en", "de")
    assert calls(upstream, "/greet") == 2


def test_upstream_vary_makes_a_two_level_entry(start_bridge, upstream, client):
    numbered(upstream, "/greet", headers={"Vary": "Accept-Language"},
             extra=lambda r: {"lang": r.headers.get("Accept-Language")})
    b = start_bridge(config_yaml(route("api", upstream.url, "{}")))  # no `vary:` in the config
    url = b.url("api") + "/greet"
    en, fr = {"Accept-Language": "en"}, {"Accept-Language": "fr"}
    assert cache_of(client.get(url, headers=en)) == "miss"
    assert cache_of(client.get(url, headers=en)) == "hit"
    r = client.get(url, headers=fr)
    assert cache_of(r) == "miss" and r.json()["lang"] == "fr"  # another value: a miss
    r = client.get(url, headers=fr)
    assert cache_of(r) == "hit" and r.json()["lang"] == "fr"
    r = client.get(url, headers=en)
    assert cache_of(r) == "hit" and r.json()["lang"] == "en"  # both kept
    assert r.headers["vary"] == "Accept-Language"
    assert calls(upstream, "/greet") == 2


def test_coalescing_never_hands_a_vary_answer_to_a_request_it_does_not_fit(
        start_bridge, upstream, client):
    numbered(upstream, "/greet", headers={"Vary": "Accept-Language"}, delay=0.6,
             extra=lambda r: {"lang": r.headers.get("Accept-Language")})
    b = start_bridge(config_yaml(route("api", upstream.url, "{}")))
    url = b.url("api") + "/greet"
    langs = ["en", "fr", "de", "fr", "en", "de"]
    barrier = threading.Barrier(len(langs))

    def ask(lang):
        barrier.wait()
        return lang, client.get(url, headers={"Accept-Language": lang}).json()["lang"]

    with ThreadPoolExecutor(len(langs)) as pool:
        answers = list(pool.map(ask, langs))
    assert [got for _, got in answers] == langs


def test_two_api_keys_never_share_an_entry_and_no_key_is_stored_in_clear(
        start_bridge, upstream, client):
    numbered(upstream, "/v1/me", extra=lambda r: {"user": USERS.get(r.headers.get("Authorization"))})
    b = start_bridge(config_yaml(route("api", upstream.url, "{}")),
                     replay=ReplayMode(record=True))  # cassettes on disk too
    url = b.url("api") + "/v1/me"
    alice = {"Authorization": f"Bearer {TOKEN_A}"}
    bob = {"Authorization": f"Bearer {TOKEN_B}"}
    a1, b1 = client.get(url, headers=alice), client.get(url, headers=bob)
    assert (cache_of(a1), cache_of(b1)) == ("miss", "miss")
    a2, b2 = client.get(url, headers=alice), client.get(url, headers=bob)
    assert (cache_of(a2), cache_of(b2)) == ("hit", "hit")
    assert (a2.json()["user"], b2.json()["user"]) == ("alice", "bob")
    assert calls(upstream, "/v1/me") == 2
    # A key-like query parameter and an api-key header are credentials too.
    q = client.get(url + f"?api_key={TOKEN_A}", headers={"x-api-key": TOKEN_B})
    assert cache_of(q) == "miss"
    settled(b)
    b.stop()  # flushes the flow log as well

    files = [p for p in b.home.rglob("*") if p.is_file()]
    assert any("cache" in p.parts for p in files) and any("cassettes" in p.parts for p in files)
    for p in files:
        data = p.read_bytes()
        for token in (TOKEN_A, TOKEN_B):
            assert token.encode() not in data, f"{token[:8]}… in clear in {p}"
            assert token[8:].encode() not in data, f"the tail of {token[:8]}… in clear in {p}"


# --- what is stored ------------------------------------------------------------------------------


def test_methods_statuses_and_upstream_cache_control(start_bridge, upstream, client):
    numbered(upstream, "/post")
    numbered(upstream, "/missing", status=404)
    numbered(upstream, "/limited", status=429)
    numbered(upstream, "/broken", status=500)
    numbered(upstream, "/nostore", headers={"Cache-Control": "no-store"})
    numbered(upstream, "/private", headers={"Cache-Control": "private, max-age=60"})
    b = start_bridge(config_yaml(
        route("get_only", upstream.url, "{}"),
        route("posts", upstream.url, "{methods: [GET, POST], statuses: [200, 404]}"),
        route("override", upstream.url, "{override: true}")))

    def twice(r: str, method: str, path: str) -> list[str | None]:
        out = [cache_of(client.request(method, b.url(r) + path, json={"x": 1} if method == "POST" else None))
               for _ in range(2)]
        settled(b)
        return out

    assert twice("get_only", "POST", "/post") == [None, None]  # POST is not cached by default
    assert calls(upstream, "/post") == 2
    assert twice("posts", "POST", "/post") == ["miss", "hit"]
    assert calls(upstream, "/post") == 3

    assert twice("get_only", "GET", "/missing") == ["miss", "miss"]  # 404 only when listed
    assert calls(upstream, "/missing") == 2
    assert twice("posts", "GET", "/missing") == ["miss", "hit"]
    assert calls(upstream, "/missing") == 3

    for path in ("/limited", "/broken"):  # never, whatever the route says
        before = calls(upstream, path)
        for r in ("get_only", "posts", "override"):
            assert twice(r, "GET", path) == ["miss", "miss"]
        assert calls(upstream, path) == before + 6

    for path in ("/nostore", "/private"):
        assert twice("get_only", "GET", path) == ["miss", "miss"]
        assert twice("override", "GET", path) == ["miss", "hit"]
        assert calls(upstream, path) == 3


def test_a_namespace_is_shared_by_two_routes(start_bridge, upstream_factory, client):
    one, two = upstream_factory(), upstream_factory()
    numbered(one, "/shared")
    numbered(two, "/shared")
    b = start_bridge(config_yaml(route("first", one.url, "{namespace: llm}"),
                            route("second", two.url, "{namespace: llm}"),
                            route("alone", two.url, "{}")))
    r1 = client.get(b.url("first") + "/shared")
    r2 = client.get(b.url("second") + "/shared")
    assert (cache_of(r1), cache_of(r2)) == ("miss", "hit")
    assert r2.json() == r1.json()
    assert calls(one, "/shared") == 1 and calls(two, "/shared") == 0  # the key is not the upstream
    assert cache_of(client.get(b.url("alone") + "/shared")) == "miss"  # its own namespace
    settled(b)
    assert sorted(p.name for p in (b.home / "cache").iterdir()) == ["alone", "llm"]


def test_max_size_is_respected_least_recently_used_first(start_bridge, upstream, client):
    big = "x" * 100_000

    async def large(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "pad": big})

    upstream.on("/big", large)
    for i in range(24):
        upstream.on(f"/big/{i}", large)
    b = start_bridge(config_yaml(route("api", upstream.url, "{max_size: 1MB}")))
    base = b.url("api")
    for i in range(24):  # ~3.2 MB of entries into a 1 MB cache; /big is read in between
        assert cache_of(client.get(f"{base}/big/{i}")) == "miss"
        hot = client.get(base + "/big")
        assert hot.status_code == 200 and hot.json()["path"] == "/big"
        settled(b)
    directory = b.home / "cache" / "api"
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    assert size < 2 * 2**20, f"{size} bytes on disk for a 1 MB cache"
    assert cache_of(client.get(base + "/big")) == "hit"  # used all along: kept
    assert cache_of(client.get(base + "/big/0")) == "miss"  # the oldest: evicted
    assert calls(upstream, "/big") == 1


# --- streams ----------------------------------------------------------------------------------

EVENTS = [b'data: {"i": 0, "text": "Hel"}\n\n', b'data: {"i": 1, "text": "lo"}\n\n',
          b'data: {"i": 2, "text": "!"}\n\n', b"data: [DONE]\n\n"]
GAP = 0.3


def read_events(client: httpx.Client, url: str) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    """The SSE events of a response, each with the time it arrived."""
    out, buf = [], b""
    t0 = time.monotonic()
    with client.stream("GET", url) as r:
        for chunk in r.iter_raw():
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                out.append((time.monotonic() - t0, event + b"\n\n"))
    assert buf == b""
    return r, out


def test_sse_is_cached_whole_and_replayed_as_the_same_stream_optionally_paced(
        start_bridge, upstream, client):
    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, event in enumerate(EVENTS):
            if i:
                await asyncio.sleep(GAP)
            await resp.write(event)
        await resp.write_eof()
        return resp

    upstream.on("/v1/stream", sse)
    b = start_bridge(config_yaml(route("fast", upstream.url, "{}"),
                            route("paced", upstream.url, "{replay_pacing: true}")))
    for name in ("fast", "paced"):
        url = b.url(name) + "/v1/stream"
        live, got = read_events(client, url)
        assert cache_of(live) == "miss" and [e for _, e in got] == EVENTS
        assert got[-1][0] - got[0][0] >= 2.5 * GAP  # the upstream's own pace
        settled(b)
        replay, again = read_events(client, url)
        assert replay.status_code == 200 and cache_of(replay) == "hit"
        assert replay.headers["content-type"] == "text/event-stream"
        assert [e for _, e in again] == EVENTS  # the same events, as events
        gaps = [b2 - a for (a, _), (b2, _) in zip(again, again[1:], strict=False)]
        if name == "fast":
            assert sum(gaps) < GAP, f"unpaced replay took {sum(gaps):.3f}s"
        else:
            assert min(gaps) >= 0.75 * GAP, f"paced replay gaps {gaps}"
    assert calls(upstream, "/v1/stream") == 2


# --- broken entries ---------------------------------------------------------------------------


def test_a_corrupt_or_other_format_entry_is_a_miss_and_a_warning(
        start_bridge, upstream, client, caplog):
    numbered(upstream, "/c")
    b = start_bridge(config_yaml(route("api", upstream.url, "{}")))
    url = b.url("api") + "/c"
    assert client.get(url).json()["n"] == 1
    settled(b)
    es = EntryStore(b.home / "cache" / "api")  # a second handle, as another process has
    try:
        ((key, _),) = es.summaries()
        good = es.store.get(f"entry:{key}")
        assert good["format"] == FORMAT
        wrong_body = {**good, "body": "!!! not base64 !!!"}
        for n, bad in enumerate([b"\x00\xffgarbage", {**good, "format": FORMAT + 1}, wrong_body], 2):
            es.store.set(f"entry:{key}", bad)
            caplog.clear()
            with caplog.at_level("WARNING", logger="bridge.cache"):
                r = client.get(url)
            assert r.status_code == 200 and cache_of(r) == "miss"
            assert r.json() == {"n": n, "path": "/c"}  # the upstream's answer, not garbage
            assert any("corrupt" in rec.getMessage() for rec in caplog.records)
            settled(b)
            healed = client.get(url)  # and the entry was written anew
            assert cache_of(healed) == "hit" and healed.json()["n"] == n
    finally:
        es.close()
    assert calls(upstream, "/c") == 4


# --- coalescing ---------------------------------------------------------------------------------


def fifty(url: str, method: str = "GET", n: int = 50) -> list[httpx.Response]:
    barrier = threading.Barrier(n)
    with httpx.Client(trust_env=False, timeout=30,
                      limits=httpx.Limits(max_connections=n + 10)) as c:
        def one(_):
            barrier.wait()
            return c.request(method, url)

        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))


def test_50_identical_requests_reach_a_slow_upstream_once(start_bridge, upstream):
    payload = {"items": [{"id": i, "text": "y" * 200} for i in range(500)]}  # ~110 KB

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response(payload)

    upstream.on("/slow", slow)
    b = start_bridge(config_yaml(route("api", upstream.url, "{}")))
    responses = fifty(b.url("api") + "/slow")
    assert calls(upstream, "/slow") == 1
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses}) == 1 and responses[0].json() == payload
    kinds = Counter(cache_of(r) for r in responses)
    assert kinds["miss"] == 1 and kinds["coalesced"] + kinds["hit"] == 49 and kinds["coalesced"] >= 25


def test_non_cacheable_requests_are_never_coalesced(start_bridge, upstream):
    numbered(upstream, "/slow", delay=0.5)
    b = start_bridge(config_yaml(route("api", upstream.url, "{}"), route("plain", upstream.url)))
    posts = fifty(b.url("api") + "/slow", method="POST")  # POST is not in `methods`
    assert calls(upstream, "/slow") == 50
    assert sorted(r.json()["n"] for r in posts) == list(range(1, 51))
    gets = fifty(b.url("plain") + "/slow")  # a route without a cache
    assert calls(upstream, "/slow") == 100
    assert len({r.json()["n"] for r in gets}) == 50


# --- faults ---------------------------------------------------------------------------------------


def test_a_faulted_answer_is_never_cached_nor_recorded(start_bridge, upstream, client):
    numbered(upstream, "/f")
    b = start_bridge(config_yaml(route("api", upstream.url, "{}")),
                     replay=ReplayMode(record=True, cassette="chaos"))
    url = b.url("api") + "/f"
    b.control().add_fault({"route": "api", "name": "garble", "corrupt": True})
    garbled = client.get(url)  # the call reaches the upstream; its body is mangled on the way
    assert garbled.status_code == 200 and garbled.headers["x-bridge-fault"] == "garble"
    with pytest.raises(ValueError):
        json.loads(garbled.content)
    assert calls(upstream, "/f") == 1
    b.control().remove_fault("garble")
    b.control().add_fault({"route": "api", "name": "down", "status": 503})
    assert client.get(url + "?x=1").status_code == 503  # never reaches the upstream
    b.control().remove_fault("down")

    clean = client.get(url)
    assert cache_of(clean) == "miss" and clean.json() == {"n": 2, "path": "/f"}
    assert cache_of(client.get(url)) == "hit"
    settled(b)
    recorded = EntryStore(b.home / "cassettes" / "chaos")
    try:
        rows = [s for _, s in recorded.summaries()]
        assert [(s["parts"]["path"], s["parts"].get("query")) for s in rows] == [("/f", None)]
        ((key, _),) = recorded.summaries()
        assert json.loads(recorded.get(key).body) == {"n": 2, "path": "/f"}
    finally:
        recorded.close()


# --- record and offline -----------------------------------------------------------------------------


def record_upstream(upstream) -> None:
    numbered(upstream, "/ok", extra=lambda r: {"user": USERS.get(r.headers.get("Authorization"))})
    numbered(upstream, "/missing", status=404)
    numbered(upstream, "/boom", status=500)
    numbered(upstream, "/nostore", headers={"Cache-Control": "no-store"})
    numbered(upstream, "/v1/chat")


def test_record_then_offline_replays_without_contacting_any_upstream(
        start_bridge, upstream, client):
    record_upstream(upstream)
    cfg = config_yaml(route("api", upstream.url, "{}"), route("plain", upstream.url),
                 route("unrecorded", upstream.url), proxy=True)
    rec = start_bridge(cfg, replay=ReplayMode(record=True, routes=frozenset({"api", "plain"})))
    alice = {"Authorization": f"Bearer {TOKEN_A}"}
    online = {}
    for r in ("api", "plain"):
        base = rec.url(r)
        online[r, "ok"] = client.get(base + "/ok?page=1", headers=alice)
        online[r, "missing"] = client.get(base + "/missing")
        online[r, "boom"] = client.get(base + "/boom")
        online[r, "nostore"] = client.get(base + "/nostore")
        online[r, "chat"] = client.post(base + "/v1/chat", json={"model": "m", "q": "hi"}, headers=alice)
    online["unrecorded"] = client.get(rec.url("unrecorded") + "/ok")
    assert [online[k].status_code for k in (("api", "missing"), ("api", "boom"))] == [404, 500]
    settled(rec)
    rec.stop()
    cassette = EntryStore(rec.home / "cassettes" / "default")
    try:  # every response, whatever the cache settings say (POST, 404, 500, no-store)
        rows = sorted((s["route"], s["parts"]["method"], s["parts"]["path"], s["status"])
                      for _, s in cassette.summaries())
    finally:
        cassette.close()
    assert rows == sorted((r, m, p, s) for r in ("api", "plain") for m, p, s in [
        ("GET", "/ok", 200), ("GET", "/missing", 404), ("GET", "/boom", 500),
        ("GET", "/nostore", 200), ("POST", "/v1/chat", 200)])

    before = len(upstream.calls)
    off = start_bridge(cfg, replay=ReplayMode(offline=True), name="offline.yaml")
    bob = {"Authorization": f"Bearer {TOKEN_B}"}  # another key: credentials are out of the keys
    for r in ("api", "plain"):
        base = off.url(r)
        replays = {
            "ok": client.get(base + "/ok?page=1", headers=bob),
            "missing": client.get(base + "/missing"),
            "boom": client.get(base + "/boom"),
            "nostore": client.get(base + "/nostore"),
            "chat": client.post(base + "/v1/chat", json={"q": "hi", "model": "m"}, headers=bob),
        }
        for what, got in replays.items():
            want = online[r, what]
            assert (got.status_code, got.content) == (want.status_code, want.content), (r, what)
            assert cache_of(got) == "replay", (r, what)
        assert replays["ok"].json()["user"] == "alice"  # what was recorded, for any key
    assert len(upstream.calls) == before  # no upstream contacted

    miss = client.get(off.url("plain") + "/ok?page=2")
    assert miss.status_code == 504 and miss.headers["x-bridge-error"] == "offline_miss"
    err = miss.json()["error"]
    assert err["type"] == "offline_miss"
    assert err["closest"]["path"] == "/ok" and err["closest"]["query"] == [["page", "1"]]
    assert len(err["differences"]) == 1 and err["differences"][0].startswith("query")
    assert "'2'" in err["differences"][0] and "'1'" in err["differences"][0]
    assert "query" in err["message"] and "/ok" in err["message"]

    chat = client.post(off.url("plain") + "/v1/chat", json={"model": "m", "q": "bye"})
    assert chat.status_code == 504
    assert chat.json()["error"]["differences"] == ["body differs"]
    assert chat.json()["error"]["closest"]["method"] == "POST"

    nothing = client.get(off.url("unrecorded") + "/ok")  # its responses were not recorded
    assert nothing.status_code == 504 and "unrecorded" in nothing.json()["error"]["message"]

    with httpx.Client(proxy=off.proxy_url, trust_env=False, timeout=10) as via_proxy:
        passthrough = via_proxy.get(upstream.url + "/ok")  # matches no route
    assert passthrough.status_code == 504
    assert passthrough.json()["error"]["type"] == "offline_miss"
    assert len(upstream.calls) == before


def test_record_keeps_responses_served_from_the_cache_too(start_bridge, upstream, client):
    numbered(upstream, "/ok")
    cfg = config_yaml(route("api", upstream.url, "{}"))
    warm = start_bridge(cfg)  # an earlier session filled the cache
    assert cache_of(client.get(warm.url("api") + "/ok")) == "miss"
    settled(warm)
    warm.stop()
    rec = start_bridge(cfg, replay=ReplayMode(record=True), name="record.yaml")
    assert cache_of(client.get(rec.url("api") + "/ok")) == "hit"
    settled(rec)
    rec.stop()
    cassette = EntryStore(rec.home / "cassettes" / "default")
    try:
        assert [s["parts"]["path"] for _, s in cassette.summaries()] == ["/ok"]
    finally:
        cassette.close()


COMPLETION = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hello! How can I assist you today?",
                    "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "usage": {
        "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_the_openai_sdk_gets_the_recorded_completion_offline(start_bridge, upstream):
    async def completions(request: web.Request) -> web.Response:
        return web.json_response(COMPLETION, headers={"x-request-id": "req_123"})

    upstream.on("/v1/chat/completions", completions)
    cfg = config_yaml(route("openai", upstream.url))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]

    def ask(url: str, api_key: str, content: str | None = None):
        with httpx.Client(trust_env=False) as http:
            sdk = openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0,
                                http_client=http)
            return sdk.chat.completions.create(
                model="gpt-4o",
                messages=messages if content is None else [{"role": "user", "content": content}])

    rec = start_bridge(cfg, replay=ReplayMode(record=True))
    recorded = ask(rec.url("openai"), TOKEN_A)
    assert recorded.choices[0].message.content == "Hello! How can I assist you today?"
    settled(rec)
    rec.stop()
    assert calls(upstream, "/v1/chat/completions") == 1

    off = start_bridge(cfg, replay=ReplayMode(offline=True), name="offline.yaml")
    replayed = ask(off.url("openai"), TOKEN_B)  # a teammate's key
    assert replayed.model_dump() == recorded.model_dump()
    assert replayed.id == COMPLETION["id"] and replayed.usage.total_tokens == 29
    assert calls(upstream, "/v1/chat/completions") == 1  # offline: no upstream call
    with pytest.raises(openai.APIStatusError) as e:  # a prompt nobody recorded
        ask(off.url("openai"), TOKEN_B, "Something new")
    assert e.value.status_code == 504 and e.value.body["type"] == "offline_miss"
    assert e.value.body["differences"] == ["body differs"]
    assert e.value.body["closest"]["path"] == "/v1/chat/completions"
    assert calls(upstream, "/v1/chat/completions") == 1


def chunk(delta: dict, finish: str | None = None) -> bytes:
    doc = {"id": "chatcmpl-stream1", "object": "chat.completion.chunk", "created": 1741569952,
           "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_fc9f1d7035",
           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


CHUNKS = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}),
          chunk({"content": "!"}), chunk({}, "stop"), b"data: [DONE]\n\n"]


def test_a_stream_the_sdk_read_to_done_is_cached_whole(start_bridge, upstream):
    async def completions(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in CHUNKS:
            await resp.write(c)
        await asyncio.sleep(0.3)  # e.g. a CDN closing the chunked body a moment later
        await resp.write_eof()
        return resp

    upstream.on("/v1/chat/completions", completions)
    b = start_bridge(config_yaml(route("openai", upstream.url, "{methods: [POST]}")))
    with httpx.Client(trust_env=False) as http:
        sdk = openai.OpenAI(base_url=b.url("openai") + "/v1", api_key=TOKEN_A, max_retries=0,
                            http_client=http)

        def stream():
            return [c.model_dump() for c in sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True)]

        first = stream()
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in first) == "Hello!"
        # kept once the upstream ends the body, 0.3 s after [DONE]: until then a second
        # request would be coalesced onto the first, not answered from the cache
        wait_for(lambda: on_disk(b.home / "cache" / "openai"), what="the stream in the cache")
        again = stream()
    assert again == first
    assert calls(upstream, "/v1/chat/completions") == 1  # the second was a hit


# --- the `bridge` CLI ---------------------------------------------------------------------------


class Up:
    """`bridge up ARGS` as a subprocess, until stop()."""

    def __init__(self, args: list[str], env: dict, cwd: Path) -> None:
        self.proc, control = start_up(args, cwd, env)
        status = control_get(control, "status")
        self.urls = {x["name"]: f"http://{x['address']}" for x in status["listeners"]}

    def stop(self) -> tuple[str, str]:
        out = stop(self.proc)
        assert self.proc.returncode == 0, out[1]
        return out


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    text = r.stderr.strip()
    assert text and "\n" not in text and "Traceback" not in text, r.stderr
    return text


def test_cache_stats_ls_and_clear_from_the_cli(tmp_path, upstream, client):
    numbered(upstream, "/a")
    numbered(upstream, "/b")
    numbered(upstream, "/x")
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_yaml(route("api", upstream.url, "{}"),
                               route("other", upstream.url, "{}")))
    env = cli_env(tmp_path / "home")
    up = Up(["-q", "-c", str(cfg)], env, tmp_path)
    try:
        api, other = up.urls["api"], up.urls["other"]
        got = [cache_of(client.get(api + p)) for p in ("/a", "/a", "/a", "/b")]
        assert got == ["miss", "hit", "hit", "miss"]
        assert cache_of(client.get(other + "/x")) == "miss"
        cache = tmp_path / "home" / "cache"
        wait_for(lambda: (len(on_disk(cache / "api")), len(on_disk(cache / "other"))) == (2, 1),
                 what="the write-behind")

        st = bridge_cmd(["cache", "stats", "--json"], env, tmp_path)
        assert st.returncode == 0, st.stderr
        stats = json.loads(st.stdout)
        stores = {(s["kind"], s["name"]): s for s in stats["stores"]}
        assert stores["cache", "api"]["entries"] == 2 and stores["cache", "other"]["entries"] == 1
        assert stores["cache", "api"]["bytes"] > 0
        routes = {r["route"]: r for r in stats["routes"]}
        assert stats["live"] is True
        assert (routes["api"]["hits"], routes["api"]["misses"], routes["api"]["hit_rate"]) == (2, 2, 0.5)
        assert (routes["other"]["hits"], routes["other"]["hit_rate"]) == (0, 0.0)

        ls = bridge_cmd(["cache", "ls", "--route", "api", "--json"], env, tmp_path)
        assert ls.returncode == 0, ls.stderr
        rows = json.loads(ls.stdout)
        assert sorted(r["path"] for r in rows) == ["/a", "/b"] and {r["route"] for r in rows} == {"api"}
        human = bridge_cmd(["cache", "ls"], env, tmp_path)
        assert human.returncode == 0 and "/a" in human.stdout and "/x" in human.stdout

        refused = bridge_cmd(["cache", "clear", "--route", "api"], env, tmp_path)
        assert "--yes" in one_line(refused)
        assert cache_of(client.get(api + "/a")) == "hit"  # nothing was removed

        done = bridge_cmd(["cache", "clear", "--route", "api", "--yes", "--json"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["total"] == 2
        assert cache_of(client.get(api + "/a")) == "miss"
        assert cache_of(client.get(other + "/x")) == "hit"  # another route's entries stay

        gone = bridge_cmd(["cache", "clear", "--namespace", "other", "--yes"], env, tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert cache_of(client.get(other + "/x")) == "miss"
    finally:
        up.stop()
    assert calls(upstream, "/a") == 2 and calls(upstream, "/x") == 2
    offline_stats = bridge_cmd(["cache", "stats", "--json"], env, tmp_path)  # no bridge running
    assert offline_stats.returncode == 0 and json.loads(offline_stats.stdout)["live"] is False


def test_record_route_export_import_and_offline_from_the_cli(tmp_path, upstream, client):
    async def completions(request: web.Request) -> web.Response:
        return web.json_response(COMPLETION)

    upstream.on("/v1/chat/completions", completions)
    numbered(upstream, "/v1/models")
    numbered(upstream, "/side")
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_yaml(route("openai", upstream.url), route("side", upstream.url)))
    home, fresh = tmp_path / "home", tmp_path / "teammate"
    env, env2 = cli_env(home), cli_env(fresh)

    up = Up(["-q", "-c", str(cfg), "--record", "--record-route", "openai", "--cassette", "team"],
            env, tmp_path)
    try:
        chat = client.post(up.urls["openai"] + "/v1/chat/completions",
                           json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]},
                           headers={"Authorization": f"Bearer {TOKEN_A}"})
        models = client.get(up.urls["openai"] + "/v1/models")
        assert client.get(up.urls["side"] + "/side").status_code == 200
        assert (chat.status_code, models.status_code) == (200, 200)
        wait_for(lambda: len(on_disk(home / "cassettes" / "team")) == 2, what="the recording")
    finally:
        _, err = up.stop()
    assert "recording into cassette 'team'" in err

    ls = bridge_cmd(["cache", "ls", "--cassette", "team", "--json"], env, tmp_path)
    assert ls.returncode == 0, ls.stderr
    assert sorted((r["route"], r["path"]) for r in json.loads(ls.stdout)) == [
        ("openai", "/v1/chat/completions"), ("openai", "/v1/models")]  # not `side`

    export = tmp_path / "team.jsonl"
    ex = bridge_cmd(["cache", "export", "--cassette", "team", str(export)], env, tmp_path)
    assert ex.returncode == 0, ex.stderr
    lines = export.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["bridge_export"] == 1
    assert TOKEN_A not in export.read_text()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + lines[1] + "\n{not json\n" + lines[2] + "\n")
    refused = bridge_cmd(["cache", "import", str(bad)], env2, tmp_path)
    assert f"{bad}:3" in one_line(refused)
    empty = bridge_cmd(["cache", "ls", "--json"], env2, tmp_path)
    assert empty.returncode == 0 and json.loads(empty.stdout) == []  # nothing was written
    assert not (fresh / "cassettes" / "team").exists()

    im = bridge_cmd(["cache", "import", str(export)], env2, tmp_path)
    assert im.returncode == 0, im.stderr
    assert "imported 2" in im.stderr

    before = len(upstream.calls)
    off = Up(["-q", "-c", str(cfg), "--offline", "--cassette", "team"], env2, tmp_path)
    try:
        again = client.post(off.urls["openai"] + "/v1/chat/completions",
                            json={"messages": [{"content": "Hello!", "role": "user"}], "model": "gpt-4o"},
                            headers={"Authorization": f"Bearer {TOKEN_B}"})
        assert again.status_code == 200 and again.headers["x-bridge-cache"] == "replay"
        assert again.json() == COMPLETION
        assert client.get(off.urls["openai"] + "/v1/models").json() == models.json()
        side = client.get(off.urls["side"] + "/side")
        assert side.status_code == 504 and side.json()["error"]["type"] == "offline_miss"
    finally:
        _, err = off.stop()
    assert "offline" in err
    assert len(upstream.calls) == before

    cleared = bridge_cmd(["cache", "clear", "--cassette", "team", "--yes"], env2, tmp_path)
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(bridge_cmd(["cache", "ls", "--json"], env2, tmp_path).stdout) == []


def test_up_refuses_record_with_offline_and_an_unknown_record_route(tmp_path, upstream):
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_yaml(route("api", upstream.url)))
    env = cli_env(tmp_path / "home")
    both = bridge_cmd(["up", "-c", str(cfg), "--record", "--offline"], env, tmp_path)
    assert both.returncode == 2 and "--record and --offline" in both.stderr
    unknown = bridge_cmd(["up", "-c", str(cfg), "--record", "--record-route", "nope"], env, tmp_path)
    assert unknown.returncode == 2 and "--record-route nope" in unknown.stderr
    assert "Traceback" not in both.stderr + unknown.stderr
