"""`bridge migrate`: the chain of versions, the version 1 (ApiBridge connectors.yaml) step,
the LiteLLM and toxiproxy importers, and the command as a user runs it through the
installed entry point."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge_cli.config.loader import parse_config
from bridge_cli.config.migrate import CURRENT_VERSION, chain, detect_version, migration, upgrade
from bridge_cli.config.migrate.litellm import import_litellm
from bridge_cli.config.migrate.toxiproxy import import_toxiproxy
from bridge_cli.errors import ConfigError
from tests.conftest import cli_env

DATA = Path(__file__).parent / "data" / "migrate"
ENTRY = Path(sys.executable).with_name("bridge")
BRIDGE = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "bridge_cli"]
SECRETS = ["sk-live-5f3a9c0e7d1b4a2f8e6c", "sk-ant-api03-aaaaaaaaaaaaaaaa",
           "sk-ant-api03-bbbbbbbbbbbbbbbb"]
V1_VARIABLES = {"OPENAI_PRIMARY_API_KEY": "k1", "AZURE_OPENAI_KEY": "k2",
                "ANTHROPIC_KEY_A_API_KEY": "k3", "ANTHROPIC_KEY_B_API_KEY": "k4"}


def bridge(args: list[str], cwd: Path, env: dict | None = None,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*BRIDGE, *args], cwd=cwd, capture_output=True, text=True,
                          env=cli_env(cwd / ".home") | (env or {}), input=stdin, timeout=60)


def v1(**providers_of: list[dict]) -> dict:
    return {"connectors": {name: {"providers": p} for name, p in providers_of.items()}}


def route_of(doc: dict, name: str) -> dict:
    return next(r for r in doc["routes"] if r["name"] == name)


def kinds(notes, where_prefix: str = "") -> list[str]:
    return [n.kind for n in notes if n.where.startswith(where_prefix)]


# ---- the chain --------------------------------------------------------------------------------


@pytest.mark.parametrize("doc, version", [
    ({"version": 2, "routes": []}, 2),
    ({"connectors": {}}, 1),
    ({"version": 1, "connectors": {}}, 1),
    ({"_metadata": {"version": "2.1.0"}, "connectors": {}}, 1),  # ApiBridge's release string
])
def test_detect_version(doc, version):
    assert detect_version(doc) == version


@pytest.mark.parametrize("doc, words", [
    (["a"], "not a bridge config: expected a mapping"),
    (None, "not a bridge config: expected a mapping"),
    ({"version": 7}, "unknown config version 7"),
    ({"version": "2"}, "unknown config version '2'"),
    ({"version": True}, "unknown config version True"),
    ({"version": 0}, "unknown config version 0"),
    ({"hello": "world"}, "neither `version:` nor ApiBridge's `connectors:`"),
    ({"model_list": []}, "bridge migrate --from litellm"),
    ({"routes": []}, "add `version: 2` at the top"),
    ({"version": 1, "routes": []}, "if this file was written for bridge, set `version: 2`"),
])
def test_detect_version_refuses_what_it_does_not_know_in_one_line(doc, words):
    with pytest.raises(ConfigError) as caught:
        detect_version(doc)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_current_config_comes_back_as_it_is():
    doc = {"version": 2, "routes": [{"name": "a", "listen": 8081, "upstreams": ["http://x"]}]}
    done = upgrade(doc)
    assert (done.doc, done.from_version, done.notes, done.changed) == (doc, 2, [], False)


def test_upgrade_never_changes_the_document_it_was_given():
    doc = yaml.safe_load((DATA / "connectors.yaml").read_text())
    before = copy.deepcopy(doc)
    assert upgrade(doc).doc != before
    assert doc == before


def test_the_chain_runs_every_step_in_order(monkeypatch):
    # A version 3 that renames a key: upgrade takes a v1 file through 1->2 and then 2->3.
    monkeypatch.setattr(chain, "CURRENT_VERSION", 3)
    monkeypatch.setitem(chain._STEPS, 2, lambda doc, notes: (
        notes.append(chain.Note("moved", "routes became paths", "routes")),
        {"version": 3, "paths": doc["routes"]})[1])
    done = upgrade(v1(api=[{"name": "p", "base_url": "http://127.0.0.1:9"}]))
    assert done.from_version == 1 and done.doc["version"] == 3
    assert done.doc["paths"][0]["name"] == "api"
    assert done.notes[-1].text == "routes became paths"


def test_a_version_can_have_only_one_migration():
    with pytest.raises(RuntimeError, match="two migrations from version 1"):
        migration(1)(lambda doc, notes: doc)


# ---- version 1 -> 2, rule by rule -------------------------------------------------------------


def test_connectors_become_routes_and_providers_upstreams():
    done = upgrade(v1(openai=[{"name": "Primary", "base_url": "https://api.openai.com/"}],
                      search=[{"base_url": "http://127.0.0.1:9000"}]))
    assert done.from_version == 1
    assert done.doc == {"version": 2, "routes": [
        {"name": "openai", "listen": "127.0.0.1:8081",
         "upstreams": [{"name": "primary", "url": "https://api.openai.com"}]},
        {"name": "search", "listen": "127.0.0.1:8082",
         "upstreams": [{"name": "provider-1", "url": "http://127.0.0.1:9000"}]},
    ]}
    moved = [n for n in done.notes if n.kind == "moved"]
    assert [(n.where, n.target) for n in moved] == [
        ("connectors.openai", "routes[openai]"), ("connectors.search", "routes[search]")]


def test_names_are_made_valid_and_unique():
    done = upgrade(v1(**{"My API": [{"name": "A B", "base_url": "http://h"},
                                    {"name": "a-b", "base_url": "http://h2"}],
                         "my_api": [{"base_url": "http://h"}], "my-api": [{"base_url": "http://h"}]}))
    assert [r["name"] for r in done.doc["routes"]] == ["my-api", "my_api", "my-api-2"]
    assert [u["name"] for u in done.doc["routes"][0]["upstreams"]] == ["a-b", "a-b-2"]


def test_an_api_key_becomes_a_header_read_from_the_environment():
    done = upgrade(v1(openai=[{"name": "primary", "base_url": "https://api.openai.com",
                               "api_key": "sk-secret-123"}]))
    upstream = done.doc["routes"][0]["upstreams"][0]
    assert upstream["headers"] == {"authorization": "Bearer ${OPENAI_PRIMARY_API_KEY}"}
    assert "sk-secret-123" not in json.dumps(done.doc) + repr(done.notes)
    (note,) = [n for n in done.notes if n.kind == "env"]
    assert "export OPENAI_PRIMARY_API_KEY=" in note.text
    assert note.where == "connectors.openai.providers[0].api_key"


@pytest.mark.parametrize("url, key, header", [
    ("https://api.anthropic.com", "sk-ant", {"x-api-key": "${CLAUDE_P_API_KEY}"}),
    ("https://x.openai.azure.com/openai", "k", {"api-key": "${CLAUDE_P_API_KEY}"}),
    ("https://api.openai.com", "${MY_KEY}", {"authorization": "Bearer ${MY_KEY}"}),
    ("https://api.openai.com", "$MY_KEY", {"authorization": "Bearer ${MY_KEY}"}),
])
def test_the_key_header_suits_the_provider_and_an_existing_variable_is_kept(url, key, header):
    done = upgrade(v1(claude=[{"name": "p", "base_url": url, "api_key": key}]))
    assert done.doc["routes"][0]["upstreams"][0]["headers"] == header


def test_per_provider_settings_become_the_routes():
    done = upgrade(v1(openai=[
        {"name": "a", "base_url": "http://a", "timeout": 30, "retries": 2, "cache_ttl": 300,
         "cost_per_call_usd": 0.002},
        {"name": "b", "base_url": "http://b", "timeout": 60, "retries": 1, "cache_ttl": 120,
         "cost_per_call_usd": 0.004},
    ]))
    route = done.doc["routes"][0]
    assert route["timeout"] == "60s"                   # the longest: no call cut shorter
    assert route["retry"] == {"attempts": 3}           # retries after the first try
    assert route["cache"] == {"ttl": "120s"}           # the shortest: never staler
    assert route["spend"] == {"per_request_usd": 0.004}  # the dearest: budgets stay safe
    texts = " ".join(n.text for n in done.notes)
    assert "its providers set 30s, 60s: the route takes the longest" in texts
    assert "spend.per_request_usd: 0.004" in texts


def test_no_cache_ttl_or_zero_makes_no_cache_and_weights_make_a_weighted_route():
    done = upgrade(v1(api=[{"name": "a", "base_url": "http://a", "cache_ttl": 0, "weight": 3},
                           {"name": "b", "base_url": "http://b", "weight": 1}]))
    route = done.doc["routes"][0]
    assert "cache" not in route
    assert route["strategy"] == "weighted"
    assert [u["weight"] for u in route["upstreams"]] == [3, 1]


def test_what_bridge_has_no_place_for_is_dropped_with_a_note():
    doc = {"_metadata": {"version": "2.1.0"}, "extras": 1, "connectors": {
        "api": {"version": 3, "deprecated": True, "providers": [
            {"name": "a", "base_url": "http://a", "region": "eu", "timeout": "soon"}]},
        "empty": {"providers": []},
        "nourl": {"providers": [{"name": "x"}]},
    }}
    done = upgrade(doc)
    assert [r["name"] for r in done.doc["routes"]] == ["api"]
    dropped = {n.where: n.text for n in done.notes if n.kind == "dropped"}
    assert set(dropped) == {
        "_metadata", "extras", "connectors.api.version", "connectors.api.deprecated",
        "connectors.api.providers[0].region", "connectors.api.providers[0].timeout",
        "connectors.empty", "connectors.nourl.providers[0]", "connectors.nourl"}
    assert "2.1.0" in dropped["_metadata"]
    assert "timeout" not in done.doc["routes"][0]


def test_connectors_that_are_not_a_mapping_are_an_error():
    with pytest.raises(ConfigError, match="connectors: expected a mapping"):
        upgrade({"connectors": ["openai"]})


def test_the_example_v1_file_becomes_a_valid_config(monkeypatch):
    for name, value in V1_VARIABLES.items():
        monkeypatch.setenv(name, value)
    done = upgrade(yaml.safe_load((DATA / "connectors.yaml").read_text()))
    config = parse_config(yaml.safe_dump(done.doc))
    assert [r.name for r in config.routes] == ["openai", "anthropic"]
    assert config.routes[0].upstreams[0].headers == {"authorization": "Bearer k1"}


def test_the_writer_keeps_comments_and_key_order_of_what_a_step_keeps():
    from bridge_cli.config.migrate.writer import dump, load_round_trip

    text = ("# top\nversion: 2\nroutes:\n  # the main one\n  - name: api  # beside\n"
            "    listen: 127.0.0.1:8081\n    upstreams: [http://127.0.0.1:9]\n")
    doc = load_round_trip(text)
    doc["routes"][0]["strategy"] = "fallback"  # a step that adds a key and keeps the rest
    assert dump(doc) == text.replace("upstreams: [http://127.0.0.1:9]\n",
                                     "upstreams: [http://127.0.0.1:9]\n    strategy: fallback\n")


# ---- LiteLLM ----------------------------------------------------------------------------------


def litellm_example():
    return import_litellm(yaml.safe_load((DATA / "litellm.yaml").read_text()))


def test_litellm_model_groups_become_routes_with_their_deployments():
    done = litellm_example()
    assert done.from_version == 0
    assert [r["name"] for r in done.doc["routes"]] == ["gpt-4o", "gpt-4o-mini", "claude"]
    gpt4o = route_of(done.doc, "gpt-4o")
    assert gpt4o["strategy"] == "round_robin"  # LiteLLM's simple-shuffle
    assert gpt4o["upstreams"][0] == {
        "name": "gpt-4o", "url": "https://api.openai.com", "model": "gpt-4o",
        "headers": {"authorization": "Bearer ${OPENAI_API_KEY}"}, "params": {"temperature": 0.2}}
    azure = gpt4o["upstreams"][1]
    assert azure["headers"] == {"api-key": "${AZURE_GPT_4O_EU_API_KEY}"}
    assert "azure-key-0123456789abcdef" not in json.dumps(done.doc) + repr(done.notes)


def test_litellm_fallbacks_retries_timeout_and_cache():
    done = litellm_example()
    mini = route_of(done.doc, "gpt-4o-mini")
    assert [u["model"] for u in mini["upstreams"]] == ["gpt-4o-mini", "gpt-4o", "gpt-4o-eu"]
    assert "strategy" not in mini  # fallback: in order
    assert mini["retry"] == {"attempts": 3, "methods": ["POST"]}
    assert mini["timeout"] == "30s"
    assert mini["cache"] == {"methods": ["POST"], "ttl": "600s"}
    assert route_of(done.doc, "claude")["spend"] == {"provider": "anthropic"}


def test_litellm_lists_what_it_cannot_express():
    unsupported = {n.where for n in litellm_example().notes if n.kind == "unsupported"}
    assert {"general_settings", "router_settings.allowed_fails", "litellm_settings.drop_params",
            "model_list[3].model_info", "model_list[1].litellm_params.rpm",
            "model_list[1].litellm_params.api_version", "cache_params.type",
            "model_list[3].litellm_params.model"} <= unsupported


def test_litellm_strips_v1_from_api_base_and_refuses_what_is_not_litellm():
    done = import_litellm({"model_list": [{"model_name": "local", "litellm_params": {
        "model": "openai/llama3", "api_base": "http://127.0.0.1:11434/v1"}}]})
    assert route_of(done.doc, "local")["upstreams"][0]["url"] == "http://127.0.0.1:11434"
    with pytest.raises(ConfigError, match="not a LiteLLM config"):
        import_litellm({"routes": []})


# ---- toxiproxy --------------------------------------------------------------------------------


def toxic(kind: str, stream: str = "downstream", toxicity: float = 1.0, **attributes):
    return [{"name": "api", "listen": "127.0.0.1:18080", "upstream": "127.0.0.1:9000",
             "toxics": [{"name": "t", "type": kind, "stream": stream, "toxicity": toxicity,
                         "attributes": attributes}]}]


@pytest.mark.parametrize("proxies, keys", [
    (toxic("latency", latency=1000, jitter=100), {"latency": "1000ms", "jitter": "100ms"}),
    (toxic("bandwidth", rate=10), {"throttle": "10KB/s"}),
    (toxic("timeout", timeout=5000), {"hang": "5000ms"}),
    (toxic("timeout", timeout=0), {"hang": True}),
    (toxic("reset_peer"), {"reset": True}),
    (toxic("reset_peer", timeout=200), {"latency": "200ms", "reset": True}),
    (toxic("limit_data", bytes=2048), {"truncate": 2048}),
    (toxic("latency", toxicity=0.25, latency=5), {"probability": "25%", "latency": "5ms"}),
])
def test_toxics_become_chaos_faults(proxies, keys):
    done = import_toxiproxy(proxies)
    (fault,) = done.doc["chaos"]["faults"]
    assert fault == {"name": "api-t", "route": "api", **keys}
    parse_config(yaml.safe_dump(done.doc))  # every fault is one bridge accepts


@pytest.mark.parametrize("proxies, why", [
    (toxic("slow_close", delay=500), "delays closing the connection"),
    (toxic("slicer", average_size=64), "slices TCP packets"),
    (toxic("bandwidth", "upstream", rate=10), "not the request"),
    (toxic("limit_data", "upstream", bytes=10), "not the request"),
    (toxic("wobble"), "unknown toxic type 'wobble'"),
])
def test_toxics_without_an_equivalent_are_listed(proxies, why):
    done = import_toxiproxy(proxies)
    assert "chaos" not in done.doc
    (note,) = [n for n in done.notes if n.kind == "unsupported"]
    assert why in note.text and note.where == "[0].toxics[0]"


def test_toxiproxy_proxies_become_routes():
    done = import_toxiproxy(json.loads((DATA / "toxiproxy.json").read_text()))
    assert [(r["name"], r["listen"], r["upstreams"][0]["url"]) for r in done.doc["routes"]] == [
        ("payments_api", "127.0.0.1:18080", "http://127.0.0.1:9000"),  # [::] -> loopback
        ("search_api", "127.0.0.1:18081", "https://search.internal:443")]
    assert ("dropped", "[2]") in [(n.kind, n.where) for n in done.notes]  # disabled proxy
    # GET /proxies answers a mapping of name to proxy: the same import
    by_name = {p["name"]: p for p in json.loads((DATA / "toxiproxy.json").read_text())}
    assert import_toxiproxy(by_name).doc == done.doc
    with pytest.raises(ConfigError, match="not a toxiproxy config"):
        import_toxiproxy({"version": 2})


# ---- the command ------------------------------------------------------------------------------


def copy_example(tmp_path: Path, name: str = "connectors.yaml") -> Path:
    target = tmp_path / name
    target.write_text((DATA / name).read_text())
    return target


def test_the_default_is_a_dry_run_printing_a_diff_and_the_summary(tmp_path):
    original = copy_example(tmp_path).read_text()
    r = bridge(["migrate", "connectors.yaml"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("--- connectors.yaml\n+++ connectors.yaml (migrated)\n@@ ")
    assert "\n-connectors:\n" in out and "\n+routes:\n" in out and "\n+version: 2\n" in out
    summary = out[out.index("connectors.yaml: version 1 (ApiBridge connectors.yaml) -> "
                            "version 2"):]
    assert "  moved    connectors.openai: connector 'openai' became route 'openai'" in summary
    assert "  env      connectors.openai.providers[0].api_key: api_key of openai/primary " \
           "moved out of the file: export OPENAI_PRIMARY_API_KEY=<the key>" in summary
    assert "  dropped  connectors.openai.deprecated: " in summary
    assert summary.rstrip().endswith("keeping connectors.yaml.bak.")
    assert (tmp_path / "connectors.yaml").read_text() == original
    assert not (tmp_path / "connectors.yaml.bak").exists()


def test_api_keys_never_reach_the_output_or_the_new_file(tmp_path):
    copy_example(tmp_path)
    runs = [bridge(["migrate", "connectors.yaml"], tmp_path),
            bridge(["migrate", "--json", "connectors.yaml"], tmp_path),
            bridge(["migrate", "connectors.yaml", "--write"], tmp_path)]
    seen = "".join(r.stdout + r.stderr for r in runs) + (tmp_path / "connectors.yaml").read_text()
    assert all(r.returncode == 0 for r in runs)
    assert "api_key: <redacted>" in runs[0].stdout  # the diff's old side, masked
    for secret in SECRETS:
        assert secret not in seen
    assert (tmp_path / "connectors.yaml.bak").read_text().count("sk-") == 3  # the old file


def test_write_keeps_a_bak_passes_validate_and_a_second_run_changes_nothing(tmp_path):
    original = copy_example(tmp_path).read_text()
    first = bridge(["migrate", "connectors.yaml", "--write"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert "wrote connectors.yaml (the old file is connectors.yaml.bak)" in first.stdout
    assert (tmp_path / "connectors.yaml.bak").read_text() == original
    migrated = (tmp_path / "connectors.yaml").read_text()
    valid = bridge(["validate", "connectors.yaml"], tmp_path, env=V1_VARIABLES)
    assert valid.returncode == 0 and "ok connectors.yaml: 2 route(s)" in valid.stdout
    second = bridge(["migrate", "connectors.yaml", "--write"], tmp_path)
    assert second.returncode == 0
    assert second.stdout == "connectors.yaml is already version 2: nothing to change\n"
    assert (tmp_path / "connectors.yaml").read_text() == migrated
    assert (tmp_path / "connectors.yaml.bak").read_text() == original


def test_comments_carry_over_to_the_routes(tmp_path):
    copy_example(tmp_path)
    assert bridge(["migrate", "connectors.yaml", "--write"], tmp_path).returncode == 0
    text = (tmp_path / "connectors.yaml").read_text()
    assert text.startswith("# ApiBridge connectors for the support bot.\n"
                           "# Owner: platform team; keys live in the team vault.\n")
    assert ("  # The chat model: OpenAI first, Azure when OpenAI fails.\n"
            "  - name: openai\n") in text
    assert ("  # Claude for long documents.\n  # weighted across two keys\n"
            "  - name: anthropic\n") in text


def test_json_gives_the_document_and_the_notes(tmp_path):
    copy_example(tmp_path)
    r = bridge(["migrate", "--json", "connectors.yaml"], tmp_path)
    answer = json.loads(r.stdout)
    assert {k: answer[k] for k in ("from", "from_version", "to_version", "changed", "written")} \
        == {"from": "bridge", "from_version": 1, "to_version": CURRENT_VERSION, "changed": True,
            "written": None}
    assert answer["environment"] == sorted(V1_VARIABLES)
    assert [r["name"] for r in answer["document"]["routes"]] == ["openai", "anthropic"]
    assert {"kind": "env", "where": "connectors.openai.providers[0].api_key",
            "target": "routes[openai].upstreams[primary].headers.authorization",
            "text": "api_key of openai/primary moved out of the file: export "
                    "OPENAI_PRIMARY_API_KEY=<the key>; it is sent as the authorization header",
            } in answer["notes"]


def test_standard_input_and_output_elsewhere(tmp_path):
    text = (DATA / "connectors.yaml").read_text()
    r = bridge(["migrate", "-", "-o", "bridge.yaml"], tmp_path, stdin=text)
    assert r.returncode == 0, r.stderr
    assert "wrote bridge.yaml;" in r.stdout
    assert bridge(["validate", "bridge.yaml"], tmp_path, env=V1_VARIABLES).returncode == 0
    again = bridge(["migrate", "-", "-o", "bridge.yaml"], tmp_path, stdin=text)
    assert "wrote bridge.yaml (the old file is bridge.yaml.bak)" in again.stdout


@pytest.mark.parametrize("name, text, message", [
    ("bad.yaml", "connectors:\n  openai: [\n", "bad.yaml:3: invalid YAML: "),
    ("v9.yaml", "version: 9\nroutes: []\n", "v9.yaml: unknown config version 9: "),
    ("notes.yaml", "shopping: [milk]\n", "notes.yaml: not a bridge config: "),
    ("list.yaml", "- a\n", "list.yaml: not a bridge config: expected a mapping"),
    ("empty.yaml", "# nothing\n", "empty.yaml: the file is empty: nothing to migrate"),
    ("url.yaml", "connectors:\n  api:\n    providers:\n      - {name: a, base_url: 'ftp://x'}\n",
     "url.yaml: the migrated config would not pass `bridge validate`, so nothing was written: "
     "url.yaml (migrated):7: routes[0].upstreams[0].url: expected an http:// or https:// URL"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    r = bridge(["migrate", name, "--write"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: {message}") and r.stderr.count("\n") == 1, r.stderr
    assert (tmp_path / name).read_text() == text
    assert not (tmp_path / f"{name}.bak").exists()


@pytest.mark.parametrize("args, message", [
    (["migrate", "x.yaml", "--write", "-o", "y.yaml"], "--write (rewrite FILE in place) or -o"),
    (["migrate", "-", "--write"], "standard input has no file: use -o PATH"),
    (["migrate", "--from", "litellm", "x.yaml", "--write"], "use -o bridge.yaml"),
    (["migrate", "--from", "kong", "x.yaml"], "unknown --from 'kong': give litellm or toxiproxy"),
    (["migrate", "missing.yaml"], "missing.yaml: no such config file"),
])
def test_options_that_do_not_go_together_are_usage_errors(tmp_path, args, message):
    (tmp_path / "x.yaml").write_text("connectors: {}\n")
    r = bridge(args, tmp_path, stdin="")
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("tool, name, routes", [
    ("litellm", "litellm.yaml", 3),
    ("toxiproxy", "toxiproxy.json", 2),
])
def test_imports_print_the_new_file_and_write_a_valid_one(tmp_path, tool, name, routes):
    copy_example(tmp_path, name)
    dry = bridge(["migrate", "--from", tool, name], tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"# Imported by `bridge migrate --from {tool} {name}`")
    assert "\nversion: 2\n" in dry.stdout
    assert "  unsupported  " in dry.stdout  # what could not be carried over, listed
    assert "azure-key-0123456789abcdef" not in dry.stdout and "sk-1234" not in dry.stdout
    r = bridge(["migrate", "--from", tool, name, "-o", "bridge.yaml"], tmp_path)
    assert r.returncode == 0 and "wrote bridge.yaml;" in r.stdout
    env = {"OPENAI_API_KEY": "a", "AZURE_GPT_4O_EU_API_KEY": "b", "ANTHROPIC_API_KEY": "c"}
    valid = bridge(["validate", "bridge.yaml"], tmp_path, env=env)
    assert valid.stdout == f"ok bridge.yaml: {routes} route(s)\n", valid.stderr
    assert bridge(["migrate", "bridge.yaml"], tmp_path).stdout.endswith("nothing to change\n")


def test_an_import_of_invalid_json_is_one_line(tmp_path):
    (tmp_path / "toxiproxy.json").write_text('[{"name": "a",\n')
    r = bridge(["migrate", "--from", "toxiproxy", "toxiproxy.json"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: toxiproxy.json:2: invalid JSON: ")


def test_help_has_an_example(tmp_path):
    r = bridge(["migrate", "--help"], tmp_path)
    assert r.returncode == 0 and "bridge migrate connectors.yaml --write" in r.stdout
