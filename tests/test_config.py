"""The config layer: YAML loading, schema and semantic checks, units, the model, recipes, docs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from bridge_cli.config import model, units
from bridge_cli.config.loader import (
    DEFAULT_CONFIG_YAML,
    default_config,
    load_config,
    parse_config,
    raw_config,
    schema,
    unenforced_keys,
)
from bridge_cli.config.support import UNENFORCED
from bridge_cli.config.yamlload import load_yaml
from bridge_cli.engine.faults import options as fault_options
from bridge_cli.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def errors_of(text: str) -> list[str]:
    """The lines of the ConfigError that loading `text` (as bridge.yaml) raises."""
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "bridge.yaml")
    return str(info.value).splitlines()


MINIMAL_ROUTE = """\
version: 2
routes:
  - name: api
    listen: 8081
    upstreams: [https://api.example.com]
"""


# ---- the DESIGN.md example -------------------------------------------------------------------


def test_design_example_is_the_one_printed_in_design_md():
    design = ROOT.parent / "shared" / "DESIGN.md"
    if not design.exists():
        pytest.skip("shared/DESIGN.md is not beside the repository")
    text = design.read_text()
    block = text.split("## Config (contract)", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert (DATA / "design_example.yaml").read_text() == block


def test_design_example_loads_with_every_value_parsed():
    cfg = load_config(DATA / "design_example.yaml")
    assert cfg.proxy == model.Proxy(model.Listen("127.0.0.1", 8080))
    assert cfg.control.listen == model.Listen("127.0.0.1", 8765)
    assert cfg.store == "redis://127.0.0.1:6379/0"
    (route,) = cfg.routes
    assert route.name == "openai"
    assert route.listen == model.Listen("127.0.0.1", 8081)
    assert route.match == model.Match(host="api.openai.com", path="/v1/**")
    assert [(u.name, u.url, u.weight) for u in route.upstreams] == [
        ("primary", "https://api.openai.com", 1.0),
        ("backup", "http://127.0.0.1:11434", 1.0),
    ]
    assert route.timeout == model.Timeout(connect=10.0, total=30.0)
    assert route.retry.attempts == 3
    assert route.retry.on == ("429", "502", "503", "504", "connect", "timeout")
    assert route.retry.backoff == model.Backoff(initial=0.2, max=5.0, jitter="full")
    assert route.breaker == model.Breaker(
        failure_rate=0.5, window=20, min_calls=5, open_for=30.0, half_open_calls=2
    )
    assert route.cache.ttl == 600.0 and route.cache.methods == ("GET", "POST")
    assert route.rate_limit == model.Rate(60, 60.0)
    assert route.spend.provider == "openai"
    assert route.budget == model.Budget(
        limit_usd=5_000_000, period="day", alert_at=0.8, action="block"
    )
    assert route.drift == model.Drift(learn=True, action="warn")
    assert cfg.chaos.seed == 42
    (fault,) = cfg.chaos.faults
    assert fault.route == "openai" and fault.actions["status"] == 429 and fault.probability == 0.1
    assert fault.match == model.FaultMatch(method="POST", path="/v1/chat/completions")
    assert fault.actions["headers"] == {"retry-after": "1"}


def test_retry_on_arrives_as_written_not_as_a_yaml_boolean():
    raw = raw_config((DATA / "design_example.yaml").read_text(), "design_example.yaml")
    retry = raw["routes"][0]["retry"]
    assert "on" in retry and True not in retry
    assert retry["on"] == [429, 502, 503, 504, "connect", "timeout"]


# ---- YAML ------------------------------------------------------------------------------------


def test_yaml_1_1_words_stay_the_strings_written_and_only_true_false_are_booleans():
    doc = load_yaml("words: [on, off, yes, no, y, n, On, YES, Off]\nt: true\nf: False\non: 1\n")
    assert doc.data == {
        "words": ["on", "off", "yes", "no", "y", "n", "On", "YES", "Off"],
        "t": True, "f": False, "on": 1,
    }  # fmt: skip


def test_dates_stay_strings():
    assert load_yaml("d: 2024-01-01\nt: 2001-12-14t21:59:43.10-05:00\n").data == {
        "d": "2024-01-01",
        "t": "2001-12-14t21:59:43.10-05:00",
    }


def test_loader_does_not_change_pyyaml_safe_loader():
    import yaml

    assert yaml.safe_load("on: yes") == {True: True}


def test_where_finds_line_and_column_of_nested_paths_and_merges():
    doc = load_yaml("a:\n  b:\n    - x\n    - {c: 1}\nbase: &b {k: 2}\nm:\n  <<: *b\n")
    assert doc.where(("a", "b", 1, "c")) == (4, 8)
    assert doc.line(("a", "b", 0)) == 3
    assert doc.line(("m", "k")) == 5
    assert doc.line(("a", "missing", 3)) == 1  # falls back to the nearest enclosing node


def test_duplicate_key_is_an_error_naming_both_lines():
    lines = errors_of("""\
        version: 2
        routes:
          - name: a
            listen: 8081
            name: b
        """)
    assert lines == ["bridge.yaml:5: duplicate key 'name' (first set on line 3)"]


def test_malformed_yaml_names_file_and_line():
    lines = errors_of("version: 2\nroutes: [\n  {name: a\n")
    assert len(lines) == 1
    assert re.match(r"bridge\.yaml:\d+: invalid YAML: ", lines[0])


def test_non_string_key_is_refused_with_a_hint():
    assert errors_of("version: 2\n200: x\n") == [
        'bridge.yaml:2: a key must be a string, got 200 (quote it: "200")'
    ]


# ---- schema errors -----------------------------------------------------------------------------


def test_typo_key_says_did_you_mean_with_its_line():
    lines = errors_of(MINIMAL_ROUTE + "    retyr:\n      attempts: 3\n")
    assert lines == ["bridge.yaml:6: routes[0]: unknown key 'retyr' (did you mean 'retry'?)"]


def test_wrong_type_names_file_line_key_and_what_was_expected():
    lines = errors_of(MINIMAL_ROUTE + "    retry:\n      attempts: three\n")
    assert lines == [
        'bridge.yaml:7: routes[0].retry.attempts: expected an integer >= 1, got "three"'
    ]


def test_all_errors_are_reported_sorted_by_line_one_per_line():
    lines = errors_of("""\
        version: 2
        routes:
          - name: Bad Name
            listen: 8081
            upstreams: [ftp://x]
            strategy: fallbak
            timeout: soon
        routs: []
        """)
    assert [line.split(":")[1] for line in lines] == ["3", "5", "6", "7", "8"]
    assert "routes[0].strategy: expected one of fallback" in lines[2]
    assert "(did you mean 'fallback'?)" in lines[2]
    assert lines[3].endswith(
        'expected a duration like 30s, or a mapping {connect: 5s, total: 60s, first_token: 10s, '
        'idle: 15s}, got "soon"'
    )
    assert lines[4] == "bridge.yaml:8: unknown key 'routs' (did you mean 'routes'?)"


def test_unit_format_errors_say_what_a_unit_looks_like():
    lines = errors_of(MINIMAL_ROUTE + "    breaker: {open_for: 30 seconds, failure_rate: 150%}\n")
    assert any(
        "breaker.open_for: expected a duration like 250ms, 30s, 5m or 1h" in line for line in lines
    )
    assert any("breaker.failure_rate: expected a percentage like 50%" in line for line in lines)


@pytest.mark.parametrize("status", [429, 500, 503, 599])
def test_cache_refuses_429_and_5xx_with_a_reason(status):
    (line,) = errors_of(MINIMAL_ROUTE + f"    cache: {{statuses: [200, {status}]}}\n")
    assert line == (
        f"bridge.yaml:6: routes[0].cache.statuses[1]: {status} can't be cached: "
        "bridge never caches a 429 or a 5xx (a replayed error would outlive the "
        "outage)"
    )


def test_missing_version_and_legacy_v1_config_say_what_to_do():
    assert errors_of("routes: []\n") == [
        "bridge.yaml:1: missing required key 'version' (add `version: 2` at the top)"
    ]
    (line,) = errors_of("connectors:\n  openai: {providers: []}\n")
    assert "version 1 config" in line and "bridge migrate bridge.yaml --write" in line
    (line,) = errors_of("version: 1\n")
    assert line.startswith("bridge.yaml:1: version: expected 2, got 1")


def test_empty_and_non_mapping_configs_are_errors():
    assert "empty" in errors_of("# nothing\n")[0]
    assert "expected a mapping" in errors_of("- a\n")[0]


# ---- semantic checks -------------------------------------------------------------------------


def test_route_names_must_be_unique():
    lines = errors_of(
        MINIMAL_ROUTE + "  - name: api\n    listen: 8082\n    upstreams: [https://b]\n"
    )
    assert lines == [
        "bridge.yaml:6: routes[1].name: route name 'api' is already used by "
        "routes[0]: route names must be unique"
    ]


def test_upstream_names_must_be_unique_within_a_route_defaults_included():
    lines = errors_of("""\
        version: 2
        routes:
          - name: api
            listen: 8081
            upstreams:
              - https://a.example.com
              - {name: upstream-1, url: https://b.example.com}
        """)
    assert lines == [
        "bridge.yaml:7: routes[0].upstreams[1].name: upstream name 'upstream-1' "
        "is already used by routes[0].upstreams[0]: names must be unique within "
        "a route"
    ]


def test_listen_addresses_must_be_unique_but_port_0_may_repeat():
    lines = errors_of("""\
        version: 2
        proxy: {listen: 0.0.0.0:8081}
        routes:
          - {name: a, listen: 127.0.0.1:8081, upstreams: [https://a]}
          - {name: b, listen: 8765, upstreams: [https://a]}
        """)
    assert lines == [
        "bridge.yaml:4: routes[0].listen: 127.0.0.1:8081 is already used by proxy.listen",
        "bridge.yaml:5: routes[1].listen: 127.0.0.1:8765 is already used by the control API "
        "(its default address; set control.listen)",
    ]
    cfg = parse_config(
        textwrap.dedent("""\
        version: 2
        proxy: {listen: 0}
        control: {listen: 0}
        routes:
          - {name: a, listen: 0, upstreams: [https://a]}
          - {name: b, listen: "127.0.0.2:8081", upstreams: [https://a]}
          - {name: c, listen: "127.0.0.3:8081", upstreams: [https://a]}
        """)
    )
    assert [r.listen.port for r in cfg.routes] == [0, 8081, 8081]


def test_route_without_listen_or_match_says_what_to_add():
    (line,) = errors_of("version: 2\nroutes:\n  - {name: a, upstreams: [https://a]}\n")
    assert line.startswith("bridge.yaml:3: routes[0]: route 'a' receives no traffic: add `listen:")
    assert "`match:" in line


def test_fault_must_name_an_existing_route_and_one_of_its_upstreams():
    lines = errors_of(
        MINIMAL_ROUTE
        + textwrap.dedent("""\
        chaos:
          faults:
            - {name: f1, route: apj, status: 503}
            - {name: f2, route: api, upstream: upstream-9, status: 503}
            - {name: f3, route: "*", upstream: upstream-1, status: 503}
        """)
    )
    assert lines == [
        "bridge.yaml:8: chaos.faults[0].route: no route is named 'apj' (did you mean 'api'?) "
        "(name a route, or * for every route)",
        "bridge.yaml:9: chaos.faults[1].upstream: route 'api' has no upstream named "
        "'upstream-9' (did you mean 'upstream-1'?) (upstreams: upstream-1)",
    ]


def test_fault_that_does_nothing_is_an_error():
    (line,) = errors_of(MINIMAL_ROUTE + "chaos:\n  faults:\n    - {name: f, route: api}\n")
    assert "fault 'f' does nothing" in line


def test_budget_period_and_rolling_exclude_each_other():
    lines = errors_of(
        MINIMAL_ROUTE
        + textwrap.dedent("""\
            spend: {provider: openai}
            budget: {limit_usd: 5, period: day, rolling: 24h}
        budget: {limit_usd: 50, period: week, rolling: 7d}
        """)
    )
    assert lines == [
        "bridge.yaml:7: routes[0].budget: set `period:` (a calendar period) or `rolling:` (a "
        "sliding window), not both",
        "bridge.yaml:8: budget: set `period:` (a calendar period) or `rolling:` (a sliding "
        "window), not both",
    ]


def test_rolling_budget_replaces_the_calendar_period():
    cfg = parse_config(MINIMAL_ROUTE + "budget: {limit_usd: 0.5, rolling: 24h}\n")
    assert cfg.budget == model.Budget(limit_usd=500_000, period=None, rolling=86400.0)


def test_spend_needs_one_price_source_and_a_budget_needs_spend():
    lines = errors_of(MINIMAL_ROUTE + "    spend: {inject_usage: true}\n")
    assert lines[0].startswith("bridge.yaml:6: routes[0].spend: set `provider:`")
    (line,) = errors_of(MINIMAL_ROUTE + "    budget: {limit_usd: 5}\n")
    assert "a budget needs `spend:`" in line


# ---- building the model -------------------------------------------------------------------


def test_shorthand_upstreams_are_named_by_position_and_urls_lose_trailing_slash():
    cfg = parse_config(
        MINIMAL_ROUTE.replace(
            "[https://api.example.com]", "[https://a.example.com/, {url: http://b:9000/v1/}]"
        )
    )
    assert [(u.name, u.url) for u in cfg.routes[0].upstreams] == [
        ("upstream-1", "https://a.example.com"),
        ("upstream-2", "http://b:9000/v1"),
    ]


def test_every_unit_is_parsed_into_the_model():
    cfg = parse_config(
        MINIMAL_ROUTE
        + textwrap.dedent("""\
            timeout: 5s
            retry: {budget: 10%, budget_floor: 30/min, methods: [get, post]}
            breaker: {failure_statuses: [429, 5xx], slow_call: {duration: 2s, rate: 25%}}
            cache: {max_size: 512MB, vary: [Accept]}
            spend: {per_request_usd: {post: 0.002, GET: 0}}
        chaos:
          faults:
            - {name: slow, latency: 250ms, throttle: 10KB/s, truncate: 50%, hang: true,
               for: 5m, headers: {x-n: 1, x-b: true}, body: {error: x}}
            - {name: cut, truncate: 100, hang: 30s}
        """)
    )
    route = cfg.routes[0]
    assert route.timeout == model.Timeout(connect=5.0, total=5.0)
    assert route.retry.budget == 0.1 and route.retry.budget_floor == 0.5
    assert route.retry.methods == ("GET", "POST")
    assert route.breaker.failure_statuses == (429, *range(500, 600))
    assert route.breaker.slow_call == model.SlowCall(duration=2.0, rate=0.25)
    assert route.cache.max_size == 512 << 20 and route.cache.vary == ("accept",)
    assert route.spend.per_request_usd == {"POST": 2000, "GET": 0}
    slow, cut = cfg.chaos.faults
    does = slow.actions
    assert (does["latency"], does["throttle"], does["truncate"], does["hang"], slow.for_) == (
        0.25,
        10240,
        0.5,
        True,
        300.0,
    )
    assert does["headers"] == {"x-n": "1", "x-b": "true"}
    assert json.loads(does["body"]) == {"error": "x"}
    assert cut.actions == {"truncate": 100, "hang": 30.0}


def test_relative_file_paths_start_at_the_config_file(tmp_path):
    path = tmp_path / "bridge.yaml"
    path.write_text(
        MINIMAL_ROUTE.replace(
            "[https://api.example.com]", "[{url: https://x, ca_file: certs/ca.pem}]"
        )
    )
    cfg = load_config(path)
    assert cfg.routes[0].upstreams[0].ca_file == str(tmp_path / "certs" / "ca.pem")
    assert cfg.source == str(path)


def test_unreadable_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"version: 2\n\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml")


# ---- default config, unenforced keys ----------------------------------------------------------


def test_default_config_has_the_explicit_proxy_on_8080_and_control_on_8765():
    cfg = default_config()
    assert cfg.proxy.listen == model.Listen("127.0.0.1", 8080)
    assert cfg.control.listen == model.Listen("127.0.0.1", 8765)
    assert cfg.routes == ()
    assert cfg.source == "<built-in default>"
    assert parse_config(DEFAULT_CONFIG_YAML, "<built-in default>") == cfg


def test_a_config_without_proxy_opens_none_and_keeps_the_default_control():
    cfg = parse_config(MINIMAL_ROUTE)
    assert cfg.proxy is None
    assert cfg.control.listen == model.Listen("127.0.0.1", 8765)


def test_unenforced_keys_lists_the_present_keys_by_route_name():
    raw = raw_config((DATA / "design_example.yaml").read_text())
    found = unenforced_keys(raw)
    assert "routes[openai].rate_limit" in found
    assert "routes[openai].drift" not in found  # enforced since drift checking landed
    assert all(not key.startswith(("proxy", "control")) for key in found)
    assert "budget" not in found and "pricing" not in found  # not in this config
    assert unenforced_keys(raw_config(DEFAULT_CONFIG_YAML)) == []
    assert unenforced_keys({"budget": {}, "pricing": []}) == sorted(
        {"budget", "pricing"} & UNENFORCED
    )


# ---- recipes --------------------------------------------------------------------------------


def test_the_required_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {
        "openai",
        "anthropic",
        "openai-with-local-fallback",
        "github-api-cache",
        "flaky-upstream",
    } <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_starts_with_a_one_line_description(path):
    cfg = load_config(path)
    first = path.read_text().splitlines()[0]
    assert re.fullmatch(r"# \S.+", first)
    assert cfg.routes and all(r.listen is not None for r in cfg.routes)


def test_recipes_use_distinct_reverse_ports():
    ports = [r.listen.port for p in RECIPES for r in load_config(p).routes]
    assert len(ports) == len(set(ports))


def test_llm_recipes_carry_a_daily_warning_budget_and_provider_spend():
    for name, provider in (("openai", "openai"), ("anthropic", "anthropic")):
        route = load_config(ROOT / "recipes" / f"{name}.yaml").routes[0]
        assert route.spend.provider == provider
        assert (route.budget.period, route.budget.action) == ("day", "warn")


def test_fallback_recipe_opts_post_into_retries():
    route = load_config(ROOT / "recipes" / "openai-with-local-fallback.yaml").routes[0]
    assert route.strategy == "fallback" and "POST" in route.retry.methods
    assert route.upstreams[1].url == "http://127.0.0.1:11434" and route.breaker is not None


# ---- schema <-> model <-> docs ------------------------------------------------------------------

DEF_CLASSES = {
    "route": model.Route, "upstream": model.Upstream, "match": model.Match,
    "timeout": model.Timeout, "retry": model.Retry, "backoff": model.Backoff,
    "breaker": model.Breaker, "slow_call": model.SlowCall, "cache": model.Cache,
    "spend": model.Spend, "budget": model.Budget, "drift": model.Drift,
    "chaos": model.Chaos, "fault": model.Fault, "fault_match": model.FaultMatch,
}  # fmt: skip
TOP_CLASSES = {"proxy": model.Proxy, "control": model.Control}


def _fields(cls) -> set[str]:
    return {"for" if f.name == "for_" else f.name for f in dataclasses.fields(cls)}


def test_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(schema())


def test_schema_and_model_have_the_same_keys():
    s = schema()
    for name, cls in DEF_CLASSES.items():
        keys = _fields(cls)
        if cls is model.Fault:  # a fault's actions are the keys of the fault kinds
            keys = keys - {"actions"} | set(fault_options())
        assert set(s["$defs"][name]["properties"]) == keys, name
    for name, cls in TOP_CLASSES.items():
        assert set(s["properties"][name]["properties"]) == _fields(cls), name
    assert set(s["properties"]) == _fields(model.Config) - {"source"}


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def test_every_property_is_described_and_every_object_is_closed():
    # pricing entries pass genai-prices' other fields through, on purpose
    open_objects = {"/$defs/prices", "/$defs/pricing_item/properties/match"}
    for path, node in _walk(schema()):
        for key, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{path}/properties/{key} has no description"
        if "properties" in node and path not in open_objects:
            assert node.get("additionalProperties") is False, f"{path} is open"


def _with_defaults(raw: dict, props: dict, defs: dict) -> dict:
    """`raw` with every absent key that has a schema default set to it, recursively."""
    out = dict(raw)
    for key, prop in props.items():
        if key not in out and "default" in prop:
            out[key] = prop["default"]
        target = defs[prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop
        if isinstance(out.get(key), dict) and "properties" in target:
            out[key] = _with_defaults(out[key], target["properties"], defs)
        if isinstance(out.get(key), list) and "items" in target:
            items = target["items"]
            item = defs[items["$ref"].rsplit("/", 1)[1]] if "$ref" in items else items
            out[key] = [
                _with_defaults(v, item["properties"], defs) if isinstance(v, dict) else v
                for v in out[key]
            ]
    return out


def test_schema_defaults_are_the_model_defaults():
    sparse = {
        "version": 2,
        "routes": [
            {
                "name": "api",
                "listen": 8081,
                "upstreams": [{"url": "https://a"}],
                "retry": {},
                "breaker": {},
                "cache": {},
                "spend": {"provider": "x"},
                "budget": {"limit_usd": 1},
                "drift": {},
            }
        ],
        "chaos": {"faults": [{"name": "f", "status": 500, "match": {}}]},
    }
    full = _with_defaults(sparse, schema()["properties"], schema()["$defs"])
    assert full["routes"][0]["retry"]["budget_floor"] == "10/s"  # defaults were filled in
    from bridge_cli.config.build import build_config

    built_sparse, built_full = build_config(sparse), build_config(full)
    assert built_sparse == built_full
    route = built_sparse.routes[0]
    assert route.retry == model.Retry() and route.breaker == model.Breaker()
    assert route.cache == model.Cache() and route.drift == model.Drift()
    assert route.timeout == model.Timeout() and route.strategy == "fallback"
    assert built_sparse.chaos.faults[0] == model.Fault(
        name="f", actions={"status": 500}, match=model.FaultMatch()
    )


def _gen_docs():
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "tools" / "gen_config_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_config_md_is_generated_from_the_current_schema():
    expected = _gen_docs().render(schema())
    assert (ROOT / "docs" / "config.md").read_text() == expected, (
        "docs/config.md is out of date: run python tools/gen_config_docs.py"
    )


def test_docs_mention_every_key():
    text = (ROOT / "docs" / "config.md").read_text()
    for key in (
        "routes[].retry.attempts",
        "routes[].cache.max_size",
        "chaos.faults[].for",
        "routes[].upstreams[].ca_file",
        "budget.rolling",
        "pricing[].prices.input_mtok",
    ):
        assert f"`{key}`" in text


def test_config_package_imports_no_ui_or_proxy_library():
    code = (
        "import sys, bridge_cli.config.loader; "
        "bad = [m for m in ('mitmproxy', 'typer', 'rich', 'textual') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- units -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("24h", 86400.0),
    ("1d", 86400.0), ("1.5s", 1.5), (" 2 m ", 120.0), ("0.1s", 0.1), ("30", 30.0),
    (30, 30.0), (0.5, 0.5), (0, 0.0),
])  # fmt: skip
def test_parse_duration(text, seconds):
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "5 minutes", "-1s", "1e3s", "s", True, None, -1, float("nan"), float("inf"), [1]]
)
def test_parse_duration_refuses_with_what_was_expected(bad):
    with pytest.raises(ValueError, match="expected a duration like 250ms, 30s"):
        units.parse_duration(bad)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips_any_seconds(seconds):
    assert units.parse_duration(units.format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_of_whole_milliseconds_is_short(millis):
    text = units.format_duration(millis / 1000)
    assert units.parse_duration(text) == millis / 1000
    assert re.fullmatch(r"\d+(ms|s|m|h)", text)


def test_format_duration_picks_the_largest_exact_unit():
    assert [units.format_duration(s) for s in (0.25, 30, 300, 3600, 5400, 86400, 0)] == [
        "250ms",
        "30s",
        "5m",
        "1h",
        "90m",
        "24h",
        "0s",
    ]


@given(st.integers(min_value=0, max_value=100))
def test_parse_percent_of_whole_percentages(percent):
    assert units.parse_percent(f"{percent}%") == percent / 100


@pytest.mark.parametrize("bad", ["150%", "50", "-5%", 50, 1.5, True, "half"])
def test_parse_percent_refuses(bad):
    with pytest.raises(ValueError, match="expected a percentage like 50%"):
        units.parse_percent(bad)


@pytest.mark.parametrize("text, rate", [
    ("60/min", model.Rate(60, 60.0)), ("10/s", model.Rate(10, 1.0)),
    ("100/h", model.Rate(100, 3600.0)), ("5/10s", model.Rate(5, 10.0)),
    ("1000/day", model.Rate(1000, 86400.0)), (7, model.Rate(7, 1.0)),
])  # fmt: skip
def test_parse_rate(text, rate):
    assert units.parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["60", "60/fortnight", "1.5/s", "/s", "5/0s", -1, True])
def test_parse_rate_refuses(bad):
    with pytest.raises(ValueError, match="expected a rate like 60/min"):
        units.parse_rate(bad)


@pytest.mark.parametrize("text, size", [
    ("1GB", 1 << 30), ("512MB", 512 << 20), ("10KB", 10240), ("100B", 100), ("2GiB", 2 << 30),
    ("1.5KB", 1536), ("1gb", 1 << 30), (4096, 4096),
])  # fmt: skip
def test_parse_size(text, size):
    assert units.parse_size(text) == size


@pytest.mark.parametrize("bad", ["1 PB", "GB", "-1KB", True, 1.5])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError, match="expected a size like"):
        units.parse_size(bad)


def test_parse_bandwidth():
    assert units.parse_bandwidth("10KB/s") == 10240
    assert units.parse_bandwidth("1MB/s") == 1 << 20
    assert units.parse_bandwidth(500) == 500
    for bad in ("10KB", "0KB/s", 0, "fast"):
        with pytest.raises(ValueError, match="expected a bandwidth like 10KB/s"):
            units.parse_bandwidth(bad)


@pytest.mark.parametrize("amount, micros", [
    (5.00, 5_000_000), (0.002, 2_000), (0.1 + 0.2, None), (0.3, 300_000), (0, 0),
    ("1.25", 1_250_000), ("$2", 2_000_000), (Decimal("0.000001"), 1), (12, 12_000_000),
])  # fmt: skip
def test_usd_to_micros_is_exact(amount, micros):
    if micros is None:  # 0.30000000000000004 is finer than a micro-dollar: refused, not rounded
        with pytest.raises(ValueError, match="at most 6 decimal places"):
            units.usd_to_micros(amount)
    else:
        assert units.usd_to_micros(amount) == micros


@pytest.mark.parametrize("bad", [-1, "abc", 0.0000001, True, float("nan"), "Infinity"])
def test_usd_to_micros_refuses(bad):
    with pytest.raises(ValueError, match="expected an amount in USD"):
        units.usd_to_micros(bad)


@given(st.integers(min_value=0, max_value=10**12))
def test_micros_round_trip_through_decimal_strings(micros):
    assert units.usd_to_micros(units.micros_to_usd(micros)) == micros


@pytest.mark.parametrize("text, listen", [
    ("127.0.0.1:8081", ("127.0.0.1", 8081)), (":8081", ("127.0.0.1", 8081)),
    ("8081", ("127.0.0.1", 8081)), (8081, ("127.0.0.1", 8081)), (0, ("127.0.0.1", 0)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9000", ("::1", 9000)),
    ("localhost:1", ("localhost", 1)),
])  # fmt: skip
def test_parse_listen(text, listen):
    assert units.parse_listen(text) == model.Listen(*listen)


@pytest.mark.parametrize("bad", ["host", "1.2.3.4:", "70000", 65536, -1, "a b:1", True])
def test_parse_listen_refuses(bad):
    with pytest.raises(ValueError, match="expected an address like 127.0.0.1:8081"):
        units.parse_listen(bad)


def test_drift_schema_takes_a_builtin_name_or_an_existing_file(tmp_path):
    base = ("version: 2\nroutes:\n  - name: a\n    listen: 127.0.0.1:0\n"
            "    upstreams: [http://127.0.0.1:1]\n    drift: {schema: %s}\n")
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(base % "builtin:openai-chat")
    assert load_config(cfg).routes[0].drift.schema == "builtin:openai-chat"
    cfg.write_text(base % "builtin:openai-chatt")
    with pytest.raises(ConfigError, match=r"no built-in schema 'builtin:openai-chatt' "
                                          r"\(did you mean 'openai-chat'\?\)"):
        load_config(cfg)
    cfg.write_text(base % "mine.json")
    with pytest.raises(ConfigError, match="no such schema file"):
        load_config(cfg)
    (tmp_path / "mine.json").write_text('{"type": "object"}')
    assert load_config(cfg).routes[0].drift.schema == str(tmp_path / "mine.json")
