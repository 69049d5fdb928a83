"""bridge up's request path end to end: real bridge, real upstreams, real clients."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
from aiohttp import web

from tests.conftest import dead_url, one_route
from tests.conftest import wait_for as _wait_for


def route_config(upstream_url: str, extra: str = "") -> str:
    """Route `api` to the upstream `primary`, and the explicit proxy listener."""
    return one_route(("primary", upstream_url), extra=extra, proxy=True)


def test_reverse_route_forwards_method_path_body_and_headers(start_bridge, upstream, client):
    b = start_bridge(route_config(upstream.url))
    r = client.post(b.url("api") + "/v1/echo?x=1", json={"hello": "world"},
                    headers={"x-custom": "kept", "connection": "keep-alive"})
    assert r.status_code == 200
    echoed = r.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/v1/echo?x=1"
    assert json.loads(echoed["body"]) == {"hello": "world"}
    assert echoed["headers"]["x-custom"] == "kept"
    assert echoed["headers"]["Host"] == f"127.0.0.1:{upstream.port}"
    # bridge adds no headers of its own upstream
    assert not any(k.lower().startswith("x-bridge") for k in echoed["headers"])
    assert r.headers["x-bridge-upstream"] == "primary"
    assert r.headers["x-bridge-attempts"] == "1"
    assert r.headers["x-bridge-route"] == "api"
    assert float(r.headers["x-bridge-overhead-ms"]) >= 0


def test_upstream_base_path_is_prefixed(start_bridge, upstream, client):
    b = start_bridge(route_config(upstream.url + "/base"))
    r = client.get(b.url("api") + "/v1/models")
    assert r.json()["path"] == "/base/v1/models"


def test_compressed_body_reaches_client_unchanged(start_bridge, upstream, client):
    import gzip

    payload = gzip.compress(b'{"big": "' + b"x" * 5000 + b'"}')

    async def gz(request):
        return web.Response(body=payload, headers={"Content-Encoding": "gzip",
                                                   "Content-Type": "application/json"})

    upstream.on("/gz", gz)
    b = start_bridge(route_config(upstream.url))
    r = client.get(b.url("api") + "/gz", headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.json()["big"] == "x" * 5000  # httpx decodes once: bridge did not re-encode


def test_explicit_proxy_passes_unrouted_traffic_through_and_logs_it(start_bridge, upstream, bridge_home):
    b = start_bridge("""
    version: 2
    control: {listen: 127.0.0.1:0}
    proxy: {listen: 127.0.0.1:0}
    """)
    with httpx.Client(proxy=b.proxy_url, trust_env=False) as c:
        r = c.get(upstream.url + "/plain?q=1")
    assert r.status_code == 200
    assert r.json()["path"] == "/plain?q=1"
    assert "x-bridge-request-id" in r.headers
    _wait_for(lambda: any(e.kind == "flow" for e in b.events()))
    ev = [e for e in b.events() if e.kind == "flow"][0]
    assert ev.route is None and ev.status == 200
    _wait_for(lambda: (bridge_home / "flows.jsonl").exists()
              and "/plain?q=1" in (bridge_home / "flows.jsonl").read_text())


def test_match_route_catches_proxy_traffic_by_host_and_path(start_bridge, upstream):
    b = start_bridge(f"""
    version: 2
    control: {{listen: 127.0.0.1:0}}
    proxy: {{listen: 127.0.0.1:0}}
    routes:
      - name: ghost
        match: {{host: api.example.test, path: /v1/**}}
        upstreams: [{{name: local, url: "{upstream.url}"}}]
    """)
    with httpx.Client(proxy=b.proxy_url, trust_env=False) as c:
        r = c.get("http://api.example.test/v1/things")
        assert r.status_code == 200
        assert r.json()["path"] == "/v1/things"
        assert r.headers["x-bridge-route"] == "ghost"
        # another host: not this route, a plain pass-through to where the client asked
        other = c.get(upstream.url + "/v1/things")
        assert other.status_code == 200
        assert "x-bridge-route" not in other.headers


def _sse_upstream(upstream):
    """An SSE endpoint that sends event 1 and holds the stream until the test releases it."""
    release = threading.Event()

    async def sse(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Server": "upstream-sse", "x-upstream": "yes"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, release.wait, 10)
        await resp.write(b"data: two\n\n")
        await resp.write_eof()
        return resp

    upstream.on("/sse", sse)
    return release


def _read_first_event_while_held(c: httpx.Client, url: str, release: threading.Event):
    with c.stream("GET", url) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(lines)
        # the upstream is still holding the stream open: event 1 arrived on its own
        assert not release.is_set()
        assert first == "data: one"
        release.set()
        rest = [line for line in lines if line]
    assert rest == ["data: two"]
    return r


def test_sse_reaches_client_event_by_event_on_a_route(start_bridge, upstream, client):
    release = _sse_upstream(upstream)
    b = start_bridge(route_config(upstream.url))
    r = _read_first_event_while_held(client, b.url("api") + "/sse", release)
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["x-bridge-upstream"] == "primary"
    # the upstream's own headers, not those of bridge's loopback forwarder
    assert r.headers["server"] == "upstream-sse"
    assert r.headers["x-upstream"] == "yes"


def test_sse_streams_through_the_explicit_proxy(start_bridge, upstream):
    release = _sse_upstream(upstream)
    b = start_bridge(route_config(upstream.url))
    with httpx.Client(proxy=b.proxy_url, trust_env=False, timeout=10) as c:
        _read_first_event_while_held(c, upstream.url + "/sse", release)


def test_unreachable_upstream_answers_502_json_at_once(start_bridge, client):
    b = start_bridge(route_config(dead_url()))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/anything")
    assert time.monotonic() - t0 < 3
    assert r.status_code == 502
    assert r.headers["x-bridge-error"] == "upstream_unreachable"
    err = r.json()["error"]
    assert err["type"] == "upstream_unreachable"
    assert "primary" in err["message"]


def test_slow_upstream_gives_504_json_after_the_route_timeout(start_bridge, upstream, client):
    async def slow(request):
        await asyncio.sleep(3)
        return web.Response(text="late")

    upstream.on("/slow", slow)
    b = start_bridge(route_config(upstream.url, "timeout: 300ms"))
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/slow")
    assert time.monotonic() - t0 < 2
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "upstream_timeout"


def test_secrets_never_reach_the_flow_log(start_bridge, upstream, client, bridge_home):
    b = start_bridge(route_config(upstream.url))
    secret = "sk-proj-SECRETSECRETSECRET123456"
    r = client.get(b.url("api") + f"/v1/models?api_key={secret}&keep=1",
                   headers={"Authorization": f"Bearer {secret}", "x-api-key": secret})
    assert r.status_code == 200
    # the upstream did get the credentials: redaction is for what bridge writes down
    assert upstream.calls[-1].headers["Authorization"] == f"Bearer {secret}"
    log = bridge_home / "flows.jsonl"
    _wait_for(lambda: log.exists() and "/v1/models" in log.read_text())
    text = log.read_text()
    assert secret not in text
    assert "SECRET123456" not in text
    line = json.loads(text.strip().splitlines()[-1])
    assert "keep=1" in line["url"]
    assert line["route"] == "api" and line["status"] == 200


def test_control_api_needs_the_token(start_bridge, upstream, client):
    b = start_bridge(route_config(upstream.url))
    assert client.get(b.control_url + "/api/v1/status").status_code == 401
    bad = client.get(b.control_url + "/api/v1/status", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    ok = client.get(b.control_url + "/api/v1/status",
                    headers={"Authorization": f"Bearer {b.token}"})
    assert ok.status_code == 200


def test_status_counts_requests_per_route_and_upstream(start_bridge, upstream, client):
    b = start_bridge(route_config(upstream.url))
    for _ in range(3):
        client.get(b.url("api") + "/x")
    _wait_for(lambda: b.control().status()["routes"][0]["requests"] == 3)
    status = b.control().status()
    route = status["routes"][0]
    assert route["name"] == "api"
    assert route["listen"] == b.url("api").removeprefix("http://")
    assert route["upstreams"][0]["requests"] == 3
    assert {lst["kind"] for lst in status["listeners"]} == {"proxy", "reverse"}


def test_control_file_is_private_and_removed_on_stop(start_bridge, upstream, bridge_home):
    b = start_bridge(route_config(upstream.url))
    control = bridge_home / "control.json"
    assert control.stat().st_mode & 0o777 == 0o600
    assert json.loads(control.read_text())["url"] == b.control_url
    assert bridge_home.stat().st_mode & 0o777 == 0o700
    b.stop()
    assert not control.exists()




def test_upstream_credentials_never_reach_status_in_clear(start_bridge, upstream):
    secret = "s3cret-PASSWORD-1234567890"
    b = start_bridge(route_config(upstream.url.replace("http://", f"http://user:{secret}@")))
    status = b.control().status()
    assert secret not in json.dumps(status)
    assert "127.0.0.1" in status["routes"][0]["upstreams"][0]["url"]
