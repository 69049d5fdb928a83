"""Each of bridge's addons alone (proxy/addons/), the mitmproxy way: `taddons.context` and
`tflow` flows, no sockets. A flow gets its record from the real RouteAddon on a config
parsed from YAML; stores are real diskcache stores in tmp_path, time is a ManualClock.

The cache: test_addons_cache.py; spend and budgets: test_addons_spend.py; the attempt
loop's conclusion, UpstreamAddon and stream observers: test_addons_upstream.py. They share
the helpers here. Through a real bridge: the *_e2e.py tests.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from bridge_cli.config.loader import parse_config
from bridge_cli.config.model import Config, Listen
from bridge_cli.engine.events import EventBus, FlowEvent
from bridge_cli.engine.pricing import Priced
from bridge_cli.proxy.addons.chaos import HeaderFaultAddon
from bridge_cli.proxy.addons.record import RecordAddon
from bridge_cli.proxy.addons.route import RouteAddon
from bridge_cli.proxy.flowstate import FlowState, state_of
from bridge_cli.proxy.state import LiveState, reverse_spec

# --- helpers ---------------------------------------------------------------------------------

ROUTES = """\
version: 2
proxy: {listen: 127.0.0.1:8080}
chaos: {allow_headers: %(allow)s}
routes:
  - name: api
    listen: 127.0.0.1:8081
    upstreams: [{name: primary, url: "http://127.0.0.1:9"}]
    cache: {ttl: 10m}
  - name: ghost
    match: {host: api.example.test, path: /v1/**}
    upstreams: [{name: ghost-up, url: "http://127.0.0.1:9"}]
"""


def config(text: str = ROUTES % {"allow": "false"}) -> Config:
    """A config from YAML, as bridge.yaml would give it."""
    return parse_config(textwrap.dedent(text), "bridge.yaml")


def live(cfg: Config) -> LiveState:
    """The running bridge's shared state, its reverse listeners mapped to their routes."""
    state = LiveState(config=cfg, bus=EventBus())
    state.mode_routes = {reverse_spec(r.listen): r.name for r in cfg.routes if r.listen}
    return state


def a_request(url: str, *, method: str = "GET", body: bytes | dict = b"",
              headers: dict | None = None, listener: Listen | None = None) -> http.HTTPFlow:
    """A live flow as mitmproxy hands it to the first addon: through the explicit proxy, or
    in on a reverse listener (whose URL is a placeholder, as bridge's are)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    f = tflow.tflow(req=http.Request.make(method, url, body, headers or {}))
    f.client_conn.timestamp_end = None  # the client is still connected
    if listener is not None:
        f.client_conn.proxy_mode = ProxyMode.parse(reverse_spec(listener))
        f.client_conn.sockname = (listener.host, listener.port)
    return f


def arrive(cfg: Config, route: str = "api", path: str = "/v1/x", **kw) -> http.HTTPFlow:
    """A request on `route` with its FlowState, as RouteAddon leaves it."""
    listen = cfg.route(route).listen
    url = f"http://127.0.0.1:9{path}" if listen else f"http://api.example.test{path}"
    f = a_request(url, listener=listen, **kw)
    RouteAddon(live(cfg)).request(f)
    return f


def st(flow: http.HTTPFlow) -> FlowState:
    return state_of(flow)


def error_of(flow: http.HTTPFlow) -> str:
    """bridge's JSON error type of the answer; the header and the body must agree."""
    assert flow.response.headers["x-bridge-error"] == json.loads(flow.response.content)[
        "error"]["type"]
    return flow.response.headers["x-bridge-error"]


def upstream_answer(status: int = 200, body: bytes = b'{"answer": 42}',
                    **headers: str) -> http.Response:
    return http.Response.make(status, body, {"content-type": "application/json", **headers})


# --- RouteAddon ------------------------------------------------------------------------------


def test_explicit_proxy_traffic_gets_the_route_matching_its_host_and_path():
    cfg = config()
    addon = RouteAddon(live(cfg))
    with taddons.context(addon):
        f = a_request("http://api.example.test/v1/chat?x=1", body=b"hello")
        addon.request(f)
    s = st(f)
    assert s.route.name == "ghost"
    assert (s.method, s.url, s.request_bytes) == ("GET", "http://api.example.test/v1/chat?x=1", 5)
    assert s.config is cfg and s.id and f.response is None


@pytest.mark.parametrize("url", ["http://other.example.test/v1/chat",
                                 "http://api.example.test/v2/chat"])
def test_explicit_proxy_traffic_no_route_matches_passes_through_with_a_record(url):
    addon = RouteAddon(live(config()))
    with taddons.context(addon):
        f = a_request(url)
        addon.request(f)
    assert st(f) is not None and st(f).route is None
    assert f.response is None  # mitmproxy forwards it natively


def test_a_reverse_listener_gets_its_route_and_the_url_the_client_used():
    cfg = config()
    addon = RouteAddon(live(cfg))
    with taddons.context(addon):
        f = a_request("http://127.0.0.1:9/v1/x?q=1", listener=cfg.route("api").listen)
        addon.request(f)
    assert st(f).route.name == "api"
    assert st(f).url == "http://127.0.0.1:8081/v1/x?q=1"  # not the placeholder target


def test_a_reverse_listener_whose_route_was_removed_answers_404_no_route():
    old = config()
    state = live(old)
    state.config = config("""\
        version: 2
        routes:
          - name: ghost
            match: {host: api.example.test}
            upstreams: [http://127.0.0.1:9]
        """)  # reloaded without `api`, whose listener is still closing
    addon = RouteAddon(state)
    with taddons.context(addon):
        f = a_request("http://127.0.0.1:9/v1/x", listener=old.route("api").listen)
        addon.request(f)
    assert f.response.status_code == 404
    assert error_of(f) == "no_route"
    assert "x-bridge-request-id" in f.response.headers


def test_an_answered_or_dead_flow_gets_no_record():
    addon = RouteAddon(live(config()))
    with taddons.context(addon):
        answered, dead = tflow.tflow(resp=True), tflow.tflow(live=False)
        addon.request(answered)
        addon.request(dead)
    assert state_of(answered) is None and state_of(dead) is None


# --- HeaderFaultAddon ------------------------------------------------------------------------


@pytest.mark.parametrize("allow", ["true", "false"])
@pytest.mark.parametrize("where", ["reverse listener", "proxy route", "pass-through"])
def test_the_fault_header_is_never_forwarded(allow, where):
    cfg = config(ROUTES % {"allow": allow})
    headers = {"X-Bridge-Fault": "status=503"}
    if where == "pass-through":
        f = a_request("http://elsewhere.test/", headers=headers)
        RouteAddon(live(cfg)).request(f)
    else:
        f = arrive(cfg, "api" if where == "reverse listener" else "ghost", headers=headers)
    addon = HeaderFaultAddon()
    with taddons.context(addon):
        addon.request(f)
    assert "x-bridge-fault" not in f.request.headers


def test_a_fault_header_is_ignored_unless_chaos_allows_headers():
    f = arrive(config(ROUTES % {"allow": "false"}), headers={"x-bridge-fault": "status=503"})
    addon = HeaderFaultAddon()
    with taddons.context(addon):
        addon.request(f)
    assert st(f).faults.from_header == () and f.response is None


def test_an_allowed_fault_header_becomes_a_fault_for_this_request_on_its_route():
    f = arrive(config(ROUTES % {"allow": "true"}),
               headers={"x-bridge-fault": "status=503; latency=300ms"})
    addon = HeaderFaultAddon()
    with taddons.context(addon):
        addon.request(f)
    (active,) = st(f).faults.from_header
    assert active.source == "header"
    assert active.fault.route == "api"
    assert active.fault.actions == {"status": 503, "latency": 0.3}
    assert f.response is None  # the attempt loop applies it


@pytest.mark.parametrize("value", ["status=lots", "explode=yes", " ; "])
def test_a_bad_fault_header_is_a_400_bad_fault_header(value):
    f = arrive(config(ROUTES % {"allow": "true"}), headers={"x-bridge-fault": value})
    addon = HeaderFaultAddon()
    with taddons.context(addon):
        addon.request(f)
    assert f.response.status_code == 400
    assert error_of(f) == "bad_fault_header"
    assert st(f).error == "bad_fault_header"


# --- RecordAddon -----------------------------------------------------------------------------


def published(bus: EventBus) -> list:
    events: list = []
    bus.subscribe(events.append)
    return events


def test_each_flow_is_published_once_with_its_decisions_and_secrets_redacted():
    bus = EventBus()
    events = published(bus)
    addon = RecordAddon(bus)
    secret_key, secret_token = "AIzaSyD-query-secret-0123456789", "sk-proj-header-secret-0123456789"
    f = arrive(config(), path=f"/v1/x?api_key={secret_key}&page=2",
               headers={"authorization": f"Bearer {secret_token}"})
    s = st(f)
    s.cache.status = "miss"
    s.faults.add(["slow", "garble"])
    s.spend.priced = Priced(1234, "priced", "gpt-4o")
    s.tries.upstream, s.tries.attempts = "primary", 2
    with taddons.context(addon):
        addon.request(f)
        f.response = upstream_answer()
        addon.response(f)
        f.error = tflow.terr()  # a later error: the flow is already published
        addon.error(f)
    (event,) = events
    assert isinstance(event, FlowEvent)
    assert (event.id, event.route, event.status, event.upstream, event.attempts) == (
        s.id, "api", 200, "primary", 2)
    assert event.cache == "miss" and event.faults == ("slow", "garble")
    assert (event.cost_usd, event.spend_status) == ("0.001234", "priced")
    text = json.dumps(event.to_dict())
    assert secret_key not in text and secret_token not in text
    assert "api_key=" in event.url and "page=2" in event.url  # redacted, not dropped
    assert dict(event.request_headers)["authorization"].startswith("Bearer ")


def test_a_flow_that_failed_is_published_with_its_error():
    bus = EventBus()
    events = published(bus)
    addon = RecordAddon(bus)
    f = a_request("http://elsewhere.test/")
    RouteAddon(live(config())).request(f)
    with taddons.context(addon):
        f.error = tflow.terr("client disconnected")
        addon.error(f)
    (event,) = events
    assert event.route is None and event.status is None and event.error == "client_gone"


def test_pass_through_answers_carry_a_request_id_and_bridges_overhead():
    addon = RecordAddon(EventBus())
    f = a_request("http://elsewhere.test/")
    RouteAddon(live(config())).request(f)
    with taddons.context(addon):
        addon.request(f)
        f.response = upstream_answer()
        addon.responseheaders(f)
    assert f.response.headers["x-bridge-request-id"] == st(f).id
    assert float(f.response.headers["x-bridge-overhead-ms"]) >= 0
