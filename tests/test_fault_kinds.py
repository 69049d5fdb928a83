"""Fault kinds (engine/faults/): one class per kind, in one registry.

A new kind is one class plus its entry in the schema: config building, the engine's
decision, `describe`, the `x-bridge-fault` header and the CLI's flags all come from the
registry. And every registered kind has its schema entry, its flag and its words.
"""

from __future__ import annotations

import copy

import pytest
import typer
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from bridge_cli.cli.chaos import chaos_app, with_kind_options
from bridge_cli.config import loader, units
from bridge_cli.config.loader import parse_config, parse_fault
from bridge_cli.config.model import Fault
from bridge_cli.engine.chaos import Chaos, describe, parse_fault_header
from bridge_cli.engine.faults import KINDS, Draw, FaultKind, Hit, Option
from bridge_cli.errors import ConfigError


class GatewayTimeout(FaultKind):
    """Wait, then answer 504, as a gateway that gave up on the upstream would."""

    key = "gateway_timeout"
    options = (Option("gateway_timeout", "Wait this long, then answer 504.",
                      parse=units.parse_duration),)

    def on_request(self, fault: Fault, hit: Hit, draw: Draw) -> None:
        hit.delay += self.value(fault)
        if not hit.terminal:
            hit.status, hit.headers, hit.body = 504, {"content-type": "text/plain"}, b"timeout"

    def describe(self, fault: Fault) -> str:
        return f"answer 504 after {self.value(fault):g}s"


SCHEMA_ENTRY = {
    "$ref": "#/$defs/duration",
    "description": "Wait this long, then answer 504 (a gateway that gave up).",
    "examples": ["2s"],
}

ONE_ROUTE = """\
version: 2
routes:
  - name: api
    listen: 127.0.0.1:0
    upstreams: ["http://127.0.0.1:9"]
"""


@pytest.fixture
def registered(monkeypatch):
    """GatewayTimeout in the registry, for this test only (the one line a new kind adds)."""
    monkeypatch.setitem(KINDS, GatewayTimeout.key, GatewayTimeout())


@pytest.fixture
def in_schema(monkeypatch):
    """The new kind's schema entry, added to the config schema for this test only."""
    extended = copy.deepcopy(loader.schema())
    extended["$defs"]["fault"]["properties"][GatewayTimeout.key] = SCHEMA_ENTRY
    validator = Draft202012Validator(extended,
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    monkeypatch.setattr(loader, "_validator", lambda: validator)


def test_a_new_kind_is_one_class_and_its_schema_entry(registered, in_schema):
    cfg = parse_config(ONE_ROUTE + """\
chaos:
  faults:
    - {name: gw, route: api, gateway_timeout: 2s}
    - {name: slow, route: api, latency: 1s, probability: 0%}
""")
    gw = cfg.chaos.faults[0]
    assert gw.actions == {"gateway_timeout": 2.0}  # parsed into seconds by the class
    assert describe(gw) == "answer 504 after 2s on route api"

    chaos = Chaos(42, lambda: 0.0)
    chaos.sync_config(cfg.chaos.faults)
    hit = chaos.decide("upstream", "api", "primary", "GET", "/x", {})
    assert hit.names == ["gw"] and hit.terminal and hit.shaping is None
    assert (hit.status, hit.delay, hit.body) == (504, 2.0, b"timeout")


def test_a_new_kind_combines_with_the_built_in_ones_in_registry_order(registered):
    # Registered last: latency adds up with it, and an earlier status answer wins.
    both = Fault("f", actions={"gateway_timeout": 2.0, "latency": 0.5, "status": 429})
    chaos = Chaos(1, lambda: 0.0)
    chaos.add(both)
    hit = chaos.decide("upstream", "api", None, "GET", "/", {})
    assert hit.delay == 2.5 and hit.status == 429
    assert describe(both) == "answer 429, add 0.5s latency, answer 504 after 2s on every route"


def test_a_new_kind_is_settable_by_the_fault_header_and_the_api(registered, in_schema):
    raw = parse_fault_header("gateway_timeout=1500ms; latency=100ms")
    assert raw == {"name": "x-bridge-fault", "gateway_timeout": "1500ms", "latency": "100ms"}
    fault = parse_fault(raw | {"route": "api"}, parse_config(ONE_ROUTE))
    assert fault.actions == {"gateway_timeout": 1.5, "latency": 0.1}


def test_a_new_kind_gets_its_cli_flag(registered):
    app = typer.Typer()
    got: dict = {}

    @app.command()
    @with_kind_options  # what `bridge chaos inject` is built with
    def cmd(actions: dict | None = None) -> None:
        got.update(actions or {})

    result = CliRunner().invoke(app, ["--gateway-timeout", "2s", "--status", "503"])
    assert result.exit_code == 0, result.output
    assert got == {"gateway_timeout": "2s", "status": 503}


def test_without_its_schema_entry_a_new_key_is_an_unknown_key(registered):
    with pytest.raises(ConfigError, match="gateway_timeout"):
        parse_config(ONE_ROUTE + "chaos:\n  faults:\n    - {name: gw, gateway_timeout: 2s}\n")


def test_every_registered_kind_has_a_schema_entry_a_cli_flag_and_words():
    props = loader.schema()["$defs"]["fault"]["properties"]
    inject = typer.main.get_command(chaos_app).commands["inject"]
    flags = {flag for param in inject.params for flag in param.opts}
    cfg = parse_config("version: 2\n")
    for kind in KINDS.values():
        assert kind.options[0].key == kind.key, kind
        for option in kind.options:
            assert option.key in props, f"{option.key}: no entry in $defs.fault"
            assert option.cli_flag in flags, f"{option.key}: no flag on `bridge chaos inject`"
            assert option.help, option.key
        example = props[kind.key]["examples"][0]
        fault = parse_fault({"name": "f", kind.key: example}, cfg)
        assert kind.describe(fault), f"{kind.key}: no words for `bridge chaos list`"
        assert not describe(fault).startswith("nothing"), kind.key


def test_header_keys_are_the_kinds_keys_a_header_may_set():
    with pytest.raises(ValueError) as e:
        parse_fault_header("explode=1")
    assert str(e.value) == (
        "unknown fault key 'explode' (use one of corrupt, hang, jitter, latency, preset, "
        "reset, slow_first_byte, sse_cut_after, sse_delay, status, throttle, truncate)")
    assert parse_fault_header("hang")["hang"] is True
    assert parse_fault_header("hang=true")["hang"] is True
    assert parse_fault_header("sse_cut_after=3")["sse_cut_after"] == 3
