"""`bridge chaos` as a user meets it: fault names, what a preset's error says, and what
`bridge chaos clear` leaves behind (breakers the faults opened). A real bridge on loopback,
the installed `bridge` script as the user runs it, the official openai SDK as the client.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.conftest import cli_env, config_yaml, one_route, openai_sdk, route_yaml, wait_for

BRIDGE = Path(sys.executable).with_name("bridge")  # the venv's entry point


def bridge(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """The installed `bridge ARGS` on BRIDGE_HOME `home`, run to its end."""
    return subprocess.run([str(BRIDGE), *args], env=cli_env(home), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def injected_name(args: list[str], home: Path) -> str:
    r = bridge(["chaos", "inject", *args, "--json"], home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["fault"]["name"]


def test_generated_fault_names_say_the_route_and_the_fault_once(start_bridge, upstream):
    b = start_bridge(config_yaml(route_yaml("openai", ("primary", upstream.url)),
                                 route_yaml("api", ("primary", upstream.url))))
    names = [injected_name(args, b.home) for args in (
        ["--route", "openai", "--preset", "openai-429"],
        ["--route", "openai", "--preset", "openai-429"],
        ["--route", "api", "--preset", "openai-429"],
        ["--route", "openai", "--latency", "1s"],
        ["--preset", "anthropic-429"],
    )]
    assert names == ["openai-429-1", "openai-429-2", "api-openai-429-1", "openai-latency-1",
                     "all-anthropic-429-1"]
    shown = bridge(["chaos", "list"], b.home)
    assert shown.returncode == 0 and "openai-openai" not in shown.stdout
    assert "openai-429-2" in shown.stdout


def test_the_openai_429_preset_names_the_model_the_request_asked_for(start_bridge, upstream):
    b = start_bridge(one_route(("primary", upstream.url)))
    injected_name(["--route", "api", "--preset", "openai-429"], b.home)
    sdk = openai_sdk(b)
    with pytest.raises(openai.RateLimitError) as e:
        sdk.chat.completions.create(model="gpt-4.1-mini",
                                    messages=[{"role": "user", "content": "hi"}])
    message = e.value.body["message"]
    assert message.startswith("Rate limit reached for gpt-4.1-mini in organization")
    with pytest.raises(openai.RateLimitError) as e:  # a request that names no model
        sdk.models.list()
    assert e.value.body["message"].startswith("Rate limit reached for gpt-4o in")
    assert upstream.calls == []


def test_chaos_clear_says_which_breakers_the_faults_left_open_and_for_how_long(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    b = start_bridge(config_yaml(route_yaml(
        "api", ("primary", primary.url), ("backup", backup.url),
        extra="breaker: {failure_rate: 50%, window: 4, min_calls: 4, open_for: 40s}")))
    injected_name(["--route", "api", "--upstream", "primary", "--status", "503"], b.home)
    for _ in range(4):
        assert client.get(b.url("api") + "/v1/x").status_code == 200  # the backup answers

    def primary_state():
        return b.control().status()["routes"][0]["upstreams"][0]["breaker"]["state"]

    wait_for(lambda: primary_state() == "open", what="the primary's breaker opening")

    r = bridge(["chaos", "clear"], b.home)
    assert r.returncode == 0, r.stderr
    assert "removed 1 fault(s): api-503-1" in r.stdout
    said = re.search(r"breaker api/primary is still open for (\d+)s", r.stdout)
    assert said, r.stdout
    assert 30 <= int(said[1]) <= 40
    assert "api/backup" not in r.stdout  # a closed breaker is not news
    assert "bridge status" in r.stderr

    r = bridge(["chaos", "clear", "--json"], b.home)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["removed"] == []
    [still] = answer["breakers"]
    assert (still["route"], still["upstream"], still["state"]) == ("api", "primary", "open")
    assert 30 <= still["open_remaining_s"] <= 40


def test_chaos_clear_says_nothing_of_breakers_when_none_is_open(start_bridge, upstream):
    b = start_bridge(one_route(("primary", upstream.url),
                               extra="breaker: {min_calls: 2, open_for: 40s}"))
    name = injected_name(["--route", "api", "--status", "503", "--count", "1"], b.home)
    r = bridge(["chaos", "clear", name], b.home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"removed 1 fault(s): {name}" and "breaker" not in r.stderr
