"""Hot reload: a valid change applies without dropping requests in flight; a bad one is
refused and the old config keeps serving."""

from __future__ import annotations

import asyncio
import threading

import httpx
from aiohttp import web

from tests.conftest import wait_for as _wait_for

BASE = """
version: 2
control: {{listen: 127.0.0.1:0}}
routes:
  - name: api
    listen: 127.0.0.1:0
    upstreams: [{{name: first, url: "{a}"}}]
"""


def test_file_change_reroutes_new_requests_and_lets_inflight_finish(start_bridge, upstream_factory, client):
    a, b_up = upstream_factory(), upstream_factory()
    gate = threading.Event()

    async def slow(request):
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
        return web.json_response({"served_by": "first"})

    a.on("/slow", slow)
    br = start_bridge(BASE.format(a=a.url), watch=True)
    api = br.url("api")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", httpx.get(api + "/slow", trust_env=False, timeout=20)))
    t.start()
    _wait_for(lambda: len(a.calls) == 1)
    br.config_path.write_text(BASE.format(a=b_up.url).replace("name: first", "name: second"))
    _wait_for(lambda: br.bridge.state.config.routes[0].upstreams[0].name == "second")
    r = client.get(api + "/after")
    assert r.headers["x-bridge-upstream"] == "second"
    assert b_up.calls[-1].path == "/after"
    gate.set()
    t.join(10)
    assert result["r"].status_code == 200
    assert result["r"].json() == {"served_by": "first"}  # in flight: finished on the old config
    assert result["r"].headers["x-bridge-upstream"] == "first"
    assert br.url("api") == api  # port 0 keeps its port across reloads


def test_invalid_change_is_reported_and_old_config_keeps_serving(start_bridge, upstream, client):
    br = start_bridge(BASE.format(a=upstream.url), watch=True)
    br.config_path.write_text(BASE.format(a=upstream.url) + "    retyr: 3\n")
    _wait_for(lambda: any(e.kind == "notice" and e.level == "error" for e in br.events()))
    notice = [e for e in br.events() if e.kind == "notice"][-1]
    assert "retyr" in notice.message and "old config keeps serving" in notice.message
    assert client.get(br.url("api") + "/still").status_code == 200


def test_reload_adds_and_removes_listeners(start_bridge, upstream, client):
    br = start_bridge(BASE.format(a=upstream.url))

    br.config_path.write_text(BASE.format(a=upstream.url).replace("name: api", "name: renamed"))
    assert br.reload().applied
    assert client.get(br.url("renamed") + "/x").status_code == 200
    assert "api" not in br.bridge.state.bound


def test_reload_to_a_busy_port_is_refused_and_nothing_changes(start_bridge, upstream, client):
    import socket

    br = start_bridge(BASE.format(a=upstream.url))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        br.config_path.write_text(BASE.format(a=upstream.url).replace(
            "listen: 127.0.0.1:0\n    upstreams", f"listen: 127.0.0.1:{busy}\n    upstreams"))
        result = br.reload()
    assert not result.applied
    assert "routes[api].listen" in result.message and "in use" in result.message
    assert client.get(br.url("api") + "/x").status_code == 200


def test_reload_through_the_control_api(start_bridge, upstream):
    br = start_bridge(BASE.format(a=upstream.url))
    br.config_path.write_text(BASE.format(a=upstream.url).replace("name: first", "name: other"))
    out = br.control().reload()
    assert out["applied"] is True
    _wait_for(lambda: br.bridge.state.config.routes[0].upstreams[0].name == "other",
              what="the reloaded config in force")
