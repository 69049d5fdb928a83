"""The control API's defences end to end: a real bridge, real HTTP with httpx to the URL and
token its control.json gives.

What a user relies on: a web page in their browser can't reach the API (neither by
DNS rebinding nor by a cross-site request), the token scheme is read the way HTTP says,
and every refusal is bridge's JSON error, never a traceback or a plain-text page.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import config_yaml, one_route, route_yaml


@pytest.fixture
def control(start_bridge, upstream, bridge_home) -> dict:
    """A running bridge with a cached route; its control.json (url, token)."""
    start_bridge(config_yaml(route_yaml("api", ("up", upstream.url), cache="{ttl: 60s}")))
    return json.loads((bridge_home / "control.json").read_text())


def call(control: dict, method: str, path: str, *, headers: dict | None = None,
         **kw) -> httpx.Response:
    """METHOD /api/v1/PATH with the token (unless `headers` brings its own Authorization)."""
    sent = {"Authorization": f"Bearer {control['token']}", **(headers or {})}
    return httpx.request(method, control["url"] + "/api/v1/" + path, headers=sent,
                         trust_env=False, timeout=10, **kw)


def refused(r: httpx.Response, status: int) -> dict:
    """The JSON error of a refusal with `status`, checked for bridge's error shape."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.text
    error = r.json()["error"]
    assert error["message"] and r.headers["x-bridge-error"] == error["type"]
    assert "Traceback" not in r.text
    return error


def port_of(control: dict) -> int:
    return int(control["url"].rsplit(":", 1)[1])


# --- who may call: Host, Origin, token --------------------------------------------------------


def test_a_request_naming_another_host_is_refused_even_with_the_token(control):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends
    `Host: evil.example:PORT`; bridge refuses it before looking at anything else."""
    port = port_of(control)
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}",
                 f"localhost.evil.example:{port}"):
        error = refused(call(control, "GET", "status", headers={"Host": host}), 403)
        assert error["type"] == "forbidden_host"
        assert host in error["message"]


def test_the_control_listeners_own_names_are_accepted_as_host(control):
    port = port_of(control)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
        r = call(control, "GET", "status", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)


def test_a_cross_site_origin_is_refused_even_with_the_token(control):
    port = port_of(control)
    for origin in ("http://evil.example", "null", f"https://127.0.0.1:{port}",
                   f"http://127.0.0.1:{port}.evil.example", f"http://evil.example:{port}"):
        for method, path in (("GET", "status"), ("DELETE", "faults"), ("OPTIONS", "faults")):
            r = call(control, method, path, headers={"Origin": origin})
            assert refused(r, 403)["type"] == "forbidden_origin", (origin, method)


def test_the_control_apis_own_origin_and_no_origin_are_accepted(control):
    port = port_of(control)
    assert call(control, "GET", "status").status_code == 200
    for origin in (control["url"], f"http://localhost:{port}"):
        assert call(control, "GET", "status", headers={"Origin": origin}).status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(control, scheme):
    r = call(control, "GET", "status", headers={"Authorization": f"{scheme} {control['token']}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("header", ["Basic {token}", "{token}", "Bearer", "Bearer wrong",
                                    "Bearer {token}x", "Bearer\u00e9 {token}"])
def test_anything_but_the_bearer_token_is_unauthorized(control, header):
    r = call(control, "GET", "status",
             headers={"Authorization": header.format(token=control["token"]).encode()})
    assert refused(r, 401)["type"] == "unauthorized"


# --- every error is JSON ----------------------------------------------------------------------


def test_an_unknown_path_is_a_json_404(control):
    assert refused(call(control, "GET", "nothing-here"), 404)["type"] == "not_found"


def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(control):
    r = call(control, "PUT", "status")
    error = refused(r, 405)
    assert error["type"] == "method_not_allowed"
    assert "GET" in error["message"] and "GET" in r.headers["allow"]


def test_a_body_over_the_limit_is_a_json_413(control):
    body = json.dumps({"route": "api", "status": 503, "pad": "x" * 2_000_000})
    r = call(control, "POST", "faults", content=body,
             headers={"Content-Type": "application/json"})
    assert refused(r, 413)["type"] == "body_too_large"
    assert call(control, "GET", "faults").json()["faults"] == []


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe{}", b"[" * 2000 + b"]" * 2000,
                                  b'{"route": ' + b"[" * 200 + b"]" * 200 + b"}"],
                         ids=["malformed", "not-utf8", "2000-deep", "200-deep-value"])
def test_a_fault_body_that_is_not_usable_json_is_a_json_400(control, body):
    r = call(control, "POST", "faults", content=body,
             headers={"Content-Type": "application/json"})
    assert refused(r, 400)["type"] == "bad_request"
    assert call(control, "GET", "faults").json()["faults"] == []


@pytest.mark.parametrize("since", ["100000000000000000000d", "99999999999h", "9" * 5000 + "d"])
def test_an_absurd_since_is_a_json_400(control, since):
    error = refused(call(control, "GET", "spend", params={"since": since}), 400)
    assert "--since" in error["message"] and "7d" in error["message"]


# --- stored data that is broken, names that are not names --------------------------------------


def test_a_corrupt_cache_namespace_is_reported_not_a_500(control, bridge_home: Path):
    healthy = call(control, "GET", "cache").json()
    broken = bridge_home / "cache" / "broken"
    broken.mkdir(parents=True)
    (broken / "cache.db").write_bytes(b"this is not a sqlite database at all" * 100)

    r = call(control, "GET", "cache")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["stores"] == healthy["stores"]  # the readable ones are all still there
    assert any("broken" in w and "rm -r" in w for w in data["warnings"])

    error = refused(call(control, "DELETE", "cache", params={"namespace": "broken"}), 503)
    assert error["type"] == "store_unavailable" and "broken" in error["message"]


@pytest.mark.parametrize("param,value", [("namespace", "a\n"), ("cassette", "a\n"),
                                         ("namespace", "../a"), ("route", "api\n"),
                                         ("route", "API two")])
def test_a_name_that_is_not_a_name_is_a_json_400_and_creates_nothing(control, bridge_home,
                                                                       param, value):
    before = sorted(p.relative_to(bridge_home) for p in bridge_home.rglob("*"))
    error = refused(call(control, "DELETE", "cache", params={param: value}), 400)
    assert error["type"] == "bad_request" and param in error["message"]
    assert sorted(p.relative_to(bridge_home) for p in bridge_home.rglob("*")) == before


def test_the_cli_client_still_talks_to_the_hardened_api(start_bridge, upstream):
    b = start_bridge(one_route(("up", upstream.url)))
    client = b.control()
    assert client.status()["routes"][0]["name"] == "api"
    assert client.add_fault({"route": "api", "status": 503})["fault"]["name"] == "api-503-1"
    assert client.remove_fault()["removed"] == ["api-503-1"]


def test_a_control_api_on_ipv6_loopback_is_reachable_by_its_own_url(start_bridge, upstream,
                                                                      bridge_home):
    text = one_route(("up", upstream.url)).replace("127.0.0.1:0}", "'[::1]:0'}", 1)
    b = start_bridge(text)
    control = json.loads((bridge_home / "control.json").read_text())
    assert control["url"].startswith("http://[::1]:")
    assert b.control().status()["control"] == control["url"]
    port = port_of(control)
    for host in (f"[::1]:{port}", f"localhost:{port}"):
        assert call(control, "GET", "status", headers={"Host": host}).status_code == 200
    refused(call(control, "GET", "status", headers={"Host": f"[::2]:{port}"}), 403)
