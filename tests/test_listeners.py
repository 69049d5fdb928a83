"""Ports bridge binds: a port it picked and lost to another process is picked again; a port
the user gave that is taken is the exit-2 error naming the config key."""

from __future__ import annotations

import logging
import socket
import textwrap
import time

import pytest

from bridge_cli.config.loader import load_config
from bridge_cli.errors import StartupError
from bridge_cli.proxy import listeners
from tests.conftest import LoopThread


@pytest.fixture
def held_port():
    """A loopback port another process holds (listening) for the whole test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _lose_first_picks(monkeypatch, port: int, times: int) -> list[int]:
    """Make free_port answer `port` (held by someone else) its first `times` calls: the
    race where a picked port is taken before mitmproxy binds it. Returns every answer."""
    real, answers = listeners.free_port, []

    def racy(host: str) -> int:
        answers.append(port if len(answers) < times else real(host))
        return answers[-1]

    monkeypatch.setattr(listeners, "free_port", racy)
    return answers


def _config(tmp_path, listen: str):
    path = tmp_path / "bridge.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 2
        control: {{listen: 127.0.0.1:0}}
        routes:
          - name: api
            listen: {listen}
            upstreams: [{{name: x, url: "http://127.0.0.1:9"}}]
        """))
    return load_config(path)


def _start_fails(config, home) -> tuple[str, float]:
    """Start a bridge that must fail; its error message and how long failing took (s)."""
    from bridge_cli.proxy.runtime import Bridge

    lt = LoopThread("failing-bridge")

    async def make():
        return Bridge(config, home, watch=False)

    bridge = lt.run(make())
    began = time.monotonic()
    try:
        with pytest.raises(StartupError) as e:
            lt.run(bridge.start())
        return str(e.value), time.monotonic() - began
    finally:
        lt.run(bridge.stop())
        lt.close()


def test_a_picked_port_taken_before_mitmproxy_binds_is_picked_again(
        start_bridge, upstream, client, held_port, monkeypatch, caplog):
    answers = _lose_first_picks(monkeypatch, held_port, times=1)
    caplog.set_level(logging.INFO)
    b = start_bridge(f"""
    version: 2
    control: {{listen: 127.0.0.1:0}}
    routes:
      - name: api
        listen: 127.0.0.1:0
        upstreams: [{{name: local, url: "{upstream.url}"}}]
    """)
    assert answers[0] == held_port and len(answers) == 2  # lost once, picked again
    assert b.bridge.state.bound["api"] == ("127.0.0.1", answers[1])
    assert client.get(b.url("api") + "/served").json()["path"] == "/served"
    status = b.control().status()
    assert status["listeners"] == [
        {"name": "api", "kind": "reverse", "address": f"127.0.0.1:{answers[1]}"}]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no scary line
    assert any("was taken before bridge could bind it" in r.getMessage() for r in caplog.records)


def test_every_picked_port_taken_ends_in_a_clear_error(
        tmp_path, bridge_home, held_port, monkeypatch):
    _lose_first_picks(monkeypatch, held_port, times=100)
    message, took = _start_fails(_config(tmp_path, "127.0.0.1:0"), bridge_home)
    assert message.startswith("routes[api].listen:") and "try again" in message
    assert took < 5


def test_an_explicit_port_taken_after_the_check_names_the_key_at_once(
        tmp_path, bridge_home, held_port, monkeypatch):
    from bridge_cli.proxy import runtime

    monkeypatch.setattr(runtime, "check_bindable", lambda listen, key: None)  # taken after it
    message, took = _start_fails(_config(tmp_path, f"127.0.0.1:{held_port}"), bridge_home)
    assert message.startswith("routes[api].listen:") and "already in use" in message
    assert took < 5  # not mitmproxy's 10 s wait for a listener that never comes


def test_a_port_0_control_api_is_bound_by_the_os_not_picked(
        start_bridge, held_port, monkeypatch):
    answers = _lose_first_picks(monkeypatch, held_port, times=100)
    b = start_bridge("""
    version: 2
    control: {listen: 127.0.0.1:0}
    """)
    assert answers == []
    assert not b.control_url.endswith(f":{held_port}")
    assert b.control().status()["listeners"] == []
