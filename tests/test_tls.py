"""HTTPS: upstreams on reverse routes, and HTTPS through the explicit proxy with bridge's CA."""

from __future__ import annotations

import httpx
import pytest
import trustme

from bridge_cli.proxy.certs import ensure_ca


@pytest.fixture(scope="module")
def test_ca():
    return trustme.CA()


@pytest.fixture
def https_upstream(upstream_factory, test_ca, tmp_path):
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    up = upstream_factory(ssl_context=ctx)
    ca_file = tmp_path / "upstream-ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    return up, ca_file


def test_reverse_route_reaches_an_https_upstream_without_any_client_ca_setup(
        start_bridge, https_upstream, client):
    up, ca_file = https_upstream
    b = start_bridge(f"""
    version: 2
    control: {{listen: 127.0.0.1:0}}
    routes:
      - name: secure
        listen: 127.0.0.1:0
        upstreams: [{{name: tls, url: "{up.url}", ca_file: "{ca_file}"}}]
    """)
    r = client.get(b.url("secure") + "/v1/ping")
    assert r.status_code == 200
    assert r.json()["path"] == "/v1/ping"


def test_https_upstream_with_an_untrusted_cert_is_refused_not_trusted(
        start_bridge, https_upstream, client):
    up, _ = https_upstream
    b = start_bridge(f"""
    version: 2
    control: {{listen: 127.0.0.1:0}}
    routes:
      - name: secure
        listen: 127.0.0.1:0
        upstreams: [{{name: tls, url: "{up.url}"}}]
    """)
    r = client.get(b.url("secure") + "/v1/ping")
    assert r.status_code == 502
    assert r.headers["x-bridge-error"] in ("upstream_unreachable", "upstream_reset")
    assert up.calls == []


def test_https_through_the_explicit_proxy_once_the_client_trusts_bridges_ca(
        start_bridge, https_upstream, bridge_home):
    up, ca_file = https_upstream
    b = start_bridge(f"""
    version: 2
    control: {{listen: 127.0.0.1:0}}
    proxy: {{listen: 127.0.0.1:0}}
    routes:
      - name: secure
        match: {{host: secure.example.test}}
        upstreams: [{{name: tls, url: "{up.url}", ca_file: "{ca_file}"}}]
    """)
    bridge_ca = ensure_ca(bridge_home)
    with httpx.Client(proxy=b.proxy_url, verify=str(bridge_ca), trust_env=False) as c:
        r = c.get("https://secure.example.test/v1/hello")
    assert r.status_code == 200
    assert r.headers["x-bridge-route"] == "secure"
    assert r.json()["path"] == "/v1/hello"
    # without trusting bridge's CA the client must refuse the connection
    with httpx.Client(proxy=b.proxy_url, trust_env=False) as c, pytest.raises(httpx.ConnectError):
        c.get("https://secure.example.test/v1/hello")


def test_https_pass_through_with_the_proxy_ca_file(start_bridge, https_upstream, bridge_home):
    up, ca_file = https_upstream
    b = start_bridge(f"""
    version: 2
    control: {{listen: 127.0.0.1:0}}
    proxy: {{listen: 127.0.0.1:0, ca_file: "{ca_file}"}}
    """)
    bridge_ca = ensure_ca(bridge_home)
    with httpx.Client(proxy=b.proxy_url, verify=str(bridge_ca), trust_env=False) as c:
        r = c.get(up.url + "/direct")
    assert r.status_code == 200 and r.json()["path"] == "/direct"
