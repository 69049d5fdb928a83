"""The attempt loop's end (engine/replies.py `conclude`), UpstreamAddon against a real
upstream on 127.0.0.1 (set up as proxy/runtime.py does, without mitmproxy's servers), and
the stream observers every addon declares (engine/streams.py). Helpers: test_addons.py."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from bridge_cli.engine.cache import ReplayMode
from bridge_cli.engine.chaos import Chaos
from bridge_cli.engine.clock import ManualClock
from bridge_cli.engine.coalesce import InFlight
from bridge_cli.engine.pricing import StreamUsage, UsageStripper, sse_data
from bridge_cli.engine.replies import conclude
from bridge_cli.engine.resilience import Resilience
from bridge_cli.engine.streams import Capture, ordered, pass_end, pass_piece
from bridge_cli.proxy.addons.cache import CacheAddon
from bridge_cli.proxy.addons.chaos import HeaderFaultAddon
from bridge_cli.proxy.addons.keep import KeepAddon
from bridge_cli.proxy.addons.route import RouteAddon
from bridge_cli.proxy.addons.upstream import UpstreamAddon
from bridge_cli.proxy.cache_writer import CacheWriter
from bridge_cli.proxy.forwarder import Forwarder
from bridge_cli.proxy.outbound import make_session
from bridge_cli.proxy.state import LiveState
from bridge_cli.store.responses import ResponseStores
from tests.test_addons import a_request, arrive, config, error_of, live, st
from tests.test_spend import chat_stream, chat_usage

# --- conclude: what the client gets once the attempt loop is done --------------------------


@pytest.mark.parametrize(("kind", "fault", "gone", "unavailable", "action", "error", "status"), [
    ("response", None, False, False, "respond", None, None),
    ("response", "teapot", False, False, "respond", None, None),  # an injected answer
    ("response", None, False, True, "respond", None, None),  # an answer beats open breakers
    ("breaker_open", None, False, True, "reply", "all_upstreams_unavailable", 503),
    ("connect", None, False, True, "reply", "all_upstreams_unavailable", 503),
    ("timeout", None, False, False, "reply", "upstream_timeout", 504),
    ("connect", None, False, False, "reply", "upstream_unreachable", 502),
    ("reset", None, False, False, "reply", "upstream_reset", 502),
    ("reset", "rst", False, False, "kill", "injected_reset", None),
    ("timeout", "stuck", False, False, "reply", "upstream_timeout", 504),
    ("response", None, True, False, "reply", "client_gone", 499),
    ("reset", "rst", True, True, "reply", "client_gone", 499),  # a gone client trumps all
])
def test_conclude_picks_the_clients_answer_from_how_the_tries_ended(
        kind, fault, gone, unavailable, action, error, status):
    c = conclude("api", "primary", kind, fault, "detail", client_gone=gone,
                 all_unavailable=unavailable)
    assert c.action == action
    if action == "reply":
        assert c.reply.status == status
        assert dict(c.reply.headers)["x-bridge-error"] == error
        assert json.loads(c.reply.body)["error"]["type"] == error
    elif action == "kill":
        assert c.error == error and c.reply is None
    else:
        assert c.reply is None and c.error is None


def test_a_failed_try_reply_names_the_route_and_upstream():
    c = conclude("api", "primary", "timeout", None, "after 30s", client_gone=False,
                 all_unavailable=False)
    message = json.loads(c.reply.body)["error"]["message"]
    assert "api" in message and "primary" in message


# --- UpstreamAddon ---------------------------------------------------------------------------


@pytest.fixture
async def attempts():
    """`attempts(cfg)`: an UpstreamAddon on the shared state proxy/runtime.py builds (one
    pooled session, resilience, chaos), on a ManualClock so backoff costs no time."""
    sessions = []

    def make(cfg) -> UpstreamAddon:
        clock = ManualClock()
        state: LiveState = live(cfg)
        state.session = make_session()
        state.resilience = Resilience(clock=clock.monotonic, wall=clock.wall, rng=state.rng,
                                      on_transition=lambda t: None)
        state.resilience.sync(cfg)
        state.chaos = Chaos(7, clock.monotonic)
        state.chaos.sync_config(cfg.chaos.faults)
        sessions.append(state.session)
        return UpstreamAddon(state, Forwarder(), clock)

    yield make
    for s in sessions:
        await s.close()


def one_route(*urls: str, allow_headers: bool = False):
    ups = ", ".join(f'{{name: up{i}, url: "{u}"}}' for i, u in enumerate(urls, 1))
    return config(f"""\
        version: 2
        chaos: {{allow_headers: {str(allow_headers).lower()}}}
        routes:
          - name: api
            listen: 127.0.0.1:8081
            upstreams: [{ups}]
        """)


DEAD = "http://127.0.0.1:9"


async def test_a_routed_request_gets_the_upstreams_answer_with_bridges_headers(
        attempts, upstream):
    cfg = one_route(upstream.url)
    addon = attempts(cfg)
    f = arrive(cfg, path="/v1/x?q=1", method="POST", body=b"hello", headers={"x-test": "yes"})
    with taddons.context(addon):
        await addon.request(f)
    assert f.response.status_code == 200
    echoed = json.loads(f.response.content)
    assert (echoed["method"], echoed["path"], echoed["body"]) == ("POST", "/v1/x?q=1", "hello")
    assert echoed["headers"]["x-test"] == "yes"
    h = f.response.headers
    assert (h["x-bridge-route"], h["x-bridge-upstream"], h["x-bridge-attempts"]) == (
        "api", "up1", "1")
    assert [(t.upstream, t.outcome) for t in st(f).tries.tries] == [("up1", "ok")]


async def test_a_refused_upstream_falls_back_to_the_next_one(attempts, upstream):
    cfg = one_route(DEAD, upstream.url)
    addon = attempts(cfg)
    f = arrive(cfg)
    with taddons.context(addon):
        await addon.request(f)
    assert f.response.status_code == 200
    assert f.response.headers["x-bridge-upstream"] == "up2"
    assert f.response.headers["x-bridge-attempts"] == "2"
    assert [(t.upstream, t.outcome) for t in st(f).tries.tries] == [
        ("up1", "connect"), ("up2", "ok")]


async def test_no_upstream_reachable_is_a_502_upstream_unreachable(attempts):
    cfg = one_route(DEAD)
    addon = attempts(cfg)
    f = arrive(cfg)
    with taddons.context(addon):
        await addon.request(f)
    assert f.response.status_code == 502
    assert error_of(f) == "upstream_unreachable"
    assert f.response.headers["x-bridge-upstream"] == "up1"


async def test_an_allowed_header_fault_answers_instead_of_the_upstream(attempts, upstream):
    cfg = one_route(upstream.url, allow_headers=True)
    fault, addon = HeaderFaultAddon(), attempts(cfg)
    f = arrive(cfg, headers={"x-bridge-fault": "status=503"})
    with taddons.context(fault, addon):
        fault.request(f)
        await addon.request(f)
    assert f.response.status_code == 503
    assert f.response.headers["x-bridge-fault"] == "x-bridge-fault"
    assert st(f).faults.fired == ["x-bridge-fault"]
    assert upstream.calls == []


async def test_a_client_that_left_gets_no_try(attempts, upstream):
    cfg = one_route(upstream.url)
    addon = attempts(cfg)
    f = arrive(cfg)
    f.client_conn.timestamp_end = 1.0  # the client closed its connection
    with taddons.context(addon):
        await addon.request(f)
    assert f.response.status_code == 499 and error_of(f) == "client_gone"
    assert upstream.calls == []


def test_pass_through_that_looks_like_a_stream_is_streamed():
    cfg = config()
    addon = UpstreamAddon(live(cfg), Forwarder(), ManualClock())
    f = a_request("http://elsewhere.test/events")
    RouteAddon(live(cfg)).request(f)
    with taddons.context(addon):
        f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        addon.responseheaders(f)
    assert f.response.stream is True and st(f).stream.streamed


async def test_offline_a_request_with_a_header_fault_never_reaches_the_upstream(
        attempts, upstream, tmp_path):
    cfg = one_route(upstream.url, allow_headers=True)
    stores = ResponseStores(tmp_path / "home")
    keep = KeepAddon(CacheWriter(stores, "default"), InFlight(), ManualClock())
    cache = CacheAddon(Forwarder(), stores, ReplayMode(offline=True), keep, ManualClock())
    fault, addon = HeaderFaultAddon(), attempts(cfg)
    f = arrive(cfg, headers={"x-bridge-fault": "latency=10ms"})
    with taddons.context(fault, cache, addon):
        fault.request(f)
        await cache.request(f)
        await addon.request(f)
    stores.close()
    assert upstream.calls == []  # docs/cache.md: --offline "contacts no upstream at all"
    assert f.response.status_code == 504 and error_of(f) == "offline_miss"


# --- stream observers ------------------------------------------------------------------------

USAGE = chat_usage(19, 7, cached=0)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def declared() -> tuple[StreamUsage, UsageStripper, Capture, list]:
    """The observers of an OpenAI stream on a cached route with inject_usage (the cache
    addon declares its capture first, then spend its usage reader and stripper), and the
    list the capture hands over once the stream is complete."""
    kept: list = []
    return StreamUsage(), UsageStripper(), Capture(kept.extend), kept


def test_observers_run_readers_of_the_upstream_then_rewriters_then_capture():
    usage, stripper, capture, _ = declared()
    assert ordered([capture, usage, stripper]) == (usage, stripper, capture)


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_usage_is_read_from_the_raw_stream_while_the_client_and_the_cache_get_it_stripped(
        size):
    usage, stripper, capture, kept = declared()
    observers = ordered([capture, usage, stripper])
    raw = chat_stream("gpt-4o-2024-08-06", USAGE)
    client = b"".join(pass_piece(observers, p) for p in pieces(raw, size))
    client += pass_end(observers)
    capture.complete()
    assert usage.response()["usage"] == USAGE
    assert not any(e.get("choices") == [] for e in sse_data(client.decode()) if isinstance(e, dict))
    assert client.rstrip().endswith(b"data: [DONE]")
    events = raw.split(b"\n\n")[:-1]
    assert client == b"".join(e + b"\n\n" for e in events if b'"choices":[]' not in e)
    assert b"".join(p for _, p in kept) == client  # the cache keeps what the client got


def test_the_strippers_held_back_rest_reaches_the_client_and_the_cache_at_the_end():
    usage, stripper, capture, kept = declared()
    observers = ordered([capture, usage, stripper])
    raw = chat_stream("gpt-4o-2024-08-06", USAGE).rstrip(b"\n")  # no blank line after [DONE]
    client = b"".join(pass_piece(observers, p) for p in pieces(raw, 50))
    assert not client.endswith(b"[DONE]")  # held back: it might still be a usage chunk
    rest = pass_end(observers)
    assert rest == b"data: [DONE]"
    capture.complete()
    assert b"".join(p for _, p in kept) == client + rest
    assert usage.response()["usage"] == USAGE
