"""Traffic through the explicit proxy that matches no route, when its host fails: bridge's
JSON error (not mitmproxy's HTML page), and bridge's words for a client that doesn't trust
bridge's CA. Real bridge, real sockets on 127.0.0.1, httpx and Python's ssl as clients."""

from __future__ import annotations

import socket
import ssl
import threading

import httpx
import pytest
import trustme

from bridge_cli.proxy.certs import ensure_ca, ensure_trust_bundle, system_ca_file
from tests.conftest import (
    cli_env,
    control_get,
    dead_url,
    flow_event,
    one_route,
    start_up,
    stop,
)


@pytest.fixture
def via_proxy(start_bridge, upstream, bridge_home):
    """An httpx client through a bridge's explicit proxy, trusting bridge's CA."""
    b = start_bridge(one_route(("a", upstream.url), proxy=True))
    trust = ssl.create_default_context(cafile=str(ensure_ca(bridge_home)))
    with httpx.Client(proxy=b.proxy_url, verify=trust, trust_env=False, timeout=20) as c:
        yield b, c


def assert_bridges_error(r: httpx.Response, kind: str) -> dict:
    assert r.status_code == 502
    assert r.headers["x-bridge-error"] == kind
    assert r.headers["content-type"] == "application/json"
    assert "mitmproxy" not in r.headers.get("server", "") and "mitmproxy" not in r.text
    assert r.json()["error"]["type"] == kind
    return r.json()["error"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_port_that_refuses_is_bridges_json_error(via_proxy, scheme):
    b, c = via_proxy
    port = dead_url().rsplit(":", 1)[1]
    r = c.get(f"{scheme}://127.0.0.1:{port}/v1/models")
    err = assert_bridges_error(r, "upstream_unreachable")
    assert f"127.0.0.1:{port} could not be reached (Connection refused)" in err["message"]
    event = flow_event(b, r)  # the flow log says the same
    assert (event.status, event.error, event.route) == (502, "upstream_unreachable", None)


@pytest.mark.parametrize("scheme,port", [("http", 80), ("https", 443)])
def test_a_name_that_does_not_resolve_is_bridges_json_error(via_proxy, scheme, port):
    b, c = via_proxy
    r = c.get(f"{scheme}://nonexistent.invalid/v1/models")
    err = assert_bridges_error(r, "upstream_unreachable")
    assert f"nonexistent.invalid:{port} could not be reached (DNS:" in err["message"]
    assert "check the host name" in err["message"]


def test_a_host_that_hangs_up_without_an_answer_is_upstream_reset(via_proxy):
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    with listener:
        r = via_proxy[1].get(f"http://127.0.0.1:{listener.getsockname()[1]}/x")
    assert "without an HTTP answer" in assert_bridges_error(r, "upstream_reset")["message"]


def test_an_upstream_certificate_bridge_cannot_verify_names_the_fix(via_proxy, upstream_factory):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(ctx)
    private = upstream_factory(ssl_context=ctx)
    r = via_proxy[1].get(private.url + "/x")
    err = assert_bridges_error(r, "upstream_unreachable")
    assert "TLS with 127.0.0.1" in err["message"] and "ca_file" in err["message"]
    assert private.calls == []


def test_a_client_that_does_not_trust_bridges_ca_hears_it_once_per_host(tmp_path):
    env = cli_env(tmp_path / "home", columns=400)
    proc, control = start_up(["-q", "--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0"],
                             tmp_path, env)
    try:
        status = control_get(control, "status")
        proxy = next(lst for lst in status["listeners"] if lst["kind"] == "proxy")["address"]
        # Python's own trust store, without bridge's CA: each request is a new handshake.
        with httpx.Client(proxy=f"http://{proxy}", verify=ssl.create_default_context(),
                          trust_env=False, timeout=10) as c:
            for host in ["a.example.test", "a.example.test", "a.example.test", "b.example.test"]:
                with pytest.raises(httpx.ConnectError):
                    c.get(f"https://{host}/v1/models")
    finally:
        _, err = stop(proc)
    told = [line for line in err.splitlines() if "does not trust bridge's CA" in line]
    assert len(told) == 2, err  # once per host, not per connection
    assert "HTTPS to a.example.test" in told[0] and "HTTPS to b.example.test" in told[1]
    assert all("`bridge ca`" in line for line in told)
    assert "Client TLS handshake failed" not in err  # mitmproxy's raw line is gone


# --- the trust bundle `bridge ca` offers for SSL_CERT_FILE ------------------------------------


def test_the_trust_bundle_keeps_the_public_cas_and_adds_bridges(
        start_bridge, upstream, bridge_home, monkeypatch):
    b = start_bridge(f"""
    version: 2
    control: {{listen: 127.0.0.1:0}}
    proxy: {{listen: 127.0.0.1:0}}
    routes:
      - name: api
        match: {{host: api.example.test}}
        upstreams: [{{name: up, url: "{upstream.url}"}}]
    """)
    bundle = ensure_trust_bundle(bridge_home)
    system = system_ca_file()
    bundled = ssl.create_default_context(cafile=str(bundle)).get_ca_certs()
    public = ssl.create_default_context(cafile=str(system)).get_ca_certs()
    assert len(bundled) == len(public) + 1 and len(public) > 50
    subjects = {dict(x[0] for x in c["subject"]).get("commonName") for c in bundled}
    assert "ISRG Root X1" in subjects  # a public CA (Let's Encrypt's root) stays trusted
    assert "mitmproxy" in subjects  # and bridge's CA is added
    # a client trusting only the bundle accepts bridge's interception
    with httpx.Client(proxy=b.proxy_url, verify=ssl.create_default_context(cafile=str(bundle)),
                      trust_env=False, timeout=10) as c:
        r = c.get("https://api.example.test/v1/hello")
    assert r.status_code == 200 and r.json()["path"] == "/v1/hello"
    # `bridge ca` again, in a shell that already uses the bundle: it doesn't grow
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    size = bundle.stat().st_size
    assert ensure_trust_bundle(bridge_home) == bundle and bundle.stat().st_size == size
