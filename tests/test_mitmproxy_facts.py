"""The mitmproxy behaviour bridge's design rests on (DESIGN.md, "mitmproxy facts").

mitmproxy promises no stable embedding API. When an upgrade breaks one of these, this
file fails first and names the assumption; fix the design note and the code together.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from mitmproxy import http, options
from mitmproxy import version as mitmproxy_version
from mitmproxy.addons import default_addons
from mitmproxy.exceptions import OptionsError
from mitmproxy.master import Master

from tests.conftest import LoopThread, free_port


class Probe:
    """Answers /answer from the request hook; notes the listener of every flow."""

    def __init__(self) -> None:
        self.modes: list[str] = []

    def request(self, flow: http.HTTPFlow) -> None:
        self.modes.append(flow.client_conn.proxy_mode.full_spec)
        if flow.request.path == "/answer":
            flow.response = http.Response.make(200, b"from the hook")


@pytest.fixture
def master():
    lt = LoopThread("facts")
    probe = Probe()
    holder = {}

    async def make():
        opts = options.Options()
        m = Master(opts)
        m.addons.add(*default_addons())
        m.addons.add(probe)
        opts.update(mode=[])  # not the default regular@8080: tests bind only what they pick
        holder["task"] = asyncio.ensure_future(m.run())
        # a mode set before the proxyserver runs can be lost: wait until it runs
        for _ in range(500):
            if m.addons.get("proxyserver").is_running:
                break
            await asyncio.sleep(0.01)
        return m, opts

    m, opts = lt.run(make())
    yield m, opts, probe, lt
    m.shutdown()
    try:
        lt.run(asyncio.wait_for(holder["task"], 5))
    except Exception:
        pass
    lt.close()


def _listening(m: Master) -> dict[str, int]:
    ps = m.addons.get("proxyserver")
    return {s.mode.full_spec: s.listen_addrs[0][1] for s in ps.servers if s.listen_addrs}


def _set_modes(lt, opts, m, modes: list[str]) -> dict[str, int]:
    async def go():
        opts.update(mode=modes)
        for _ in range(200):
            await asyncio.sleep(0.01)
            ps = m.addons.get("proxyserver")
            if not ps.servers.is_updating and set(_listening(m)) == set(modes):
                return _listening(m)
        raise AssertionError(f"listeners not up: {_listening(m)}")

    return lt.run(go())


def test_version_is_in_the_pinned_range():
    major, minor = (int(x) for x in mitmproxy_version.VERSION.split(".")[:2])
    assert (major, minor) == (12, 3), "re-check every fact in this file, then widen the pin"


def test_lazy_reverse_listener_lets_the_request_hook_answer_with_upstream_down(master):
    m, opts, probe, lt = master
    # the reverse target is a placeholder nobody listens on: with connection_strategy=lazy
    # the request hook still runs and can answer (cache hit, fault, budget refusal)
    spec = f"reverse:http://127.0.0.1:9@127.0.0.1:{free_port()}"
    opts.update(connection_strategy="lazy")
    ports = _set_modes(lt, opts, m, [spec])
    r = httpx.get(f"http://127.0.0.1:{ports[spec]}/answer", trust_env=False)
    assert r.status_code == 200 and r.text == "from the hook"
    assert probe.modes[-1] == spec  # proxy_mode tells which listener a flow came in on


def test_listeners_change_at_runtime_while_others_keep_serving(master):
    m, opts, probe, lt = master
    opts.update(connection_strategy="lazy")
    keep = f"reverse:http://127.0.0.1:9@127.0.0.1:{free_port()}"
    old = f"reverse:http://127.0.0.1:9@127.0.0.1:{free_port()}"
    ports = _set_modes(lt, opts, m, [keep, old])
    with httpx.Client(trust_env=False) as c:
        assert c.get(f"http://127.0.0.1:{ports[keep]}/answer").status_code == 200
        new = f"reverse:http://127.0.0.1:9@127.0.0.1:{free_port()}"
        ports2 = _set_modes(lt, opts, m, [keep, new])
        assert ports2[keep] == ports[keep]
        assert c.get(f"http://127.0.0.1:{ports[keep]}/answer").status_code == 200
        assert c.get(f"http://127.0.0.1:{ports2[new]}/answer").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{ports[old]}/answer", trust_env=False)


def test_two_listeners_on_port_zero_are_refused(master):
    # why bridge picks free ports itself for `listen: 127.0.0.1:0`
    m, opts, probe, lt = master
    with pytest.raises(OptionsError):
        opts.update(mode=["regular@127.0.0.1:0", "reverse:http://127.0.0.1:9@127.0.0.1:0"])


def test_setting_content_reencodes_but_raw_content_does_not():
    # why bridge sets raw_content: the upstream's gzip bytes must reach the client as sent
    import gzip

    body = gzip.compress(b"hello")
    resp = http.Response.make(200, b"", {"content-encoding": "gzip"})
    resp.raw_content = body
    assert resp.raw_content == body
    resp2 = http.Response.make(200, b"", {"content-encoding": "gzip"})
    resp2.content = body
    assert resp2.raw_content != body


def test_aiohttp_still_reads_the_private_retry_switch_bridge_turns_off():
    # proxy/outbound.py sets ClientSession._retry_connection = False so that one try is
    # one request upstream; if aiohttp stops reading it, the silent resend comes back.
    import inspect

    import aiohttp

    assert "self._retry_connection" in inspect.getsource(aiohttp.ClientSession._request)
