"""`bridge diff`: configs compared by meaning, every change classified by the one rules
table (config/diff/rules.py: a test per rule below), rendered three ways, and projected on
the traffic a real bridge recorded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from bridge_cli.config.diff import RULES, diff_sides, load_side
from bridge_cli.config.migrate import upgrade
from bridge_cli.config.yamlload import load_yaml
from tests.conftest import cli_env, one_route

BRIDGE = Path(sys.executable).with_name("bridge")  # the venv's installed entry point
CONNECTORS = Path(__file__).parent / "data" / "migrate" / "connectors.yaml"

BASE = """\
version: 2
proxy: {listen: 127.0.0.1:8080}
routes:
  - name: api
    listen: 127.0.0.1:8081
    match: {host: api.openai.com, path: /v1/**}
    upstreams:
      - {name: primary, url: "https://api.openai.com"}
      - {name: backup, url: "http://127.0.0.1:11434"}
    timeout: 30s
    retry: {attempts: 2, methods: [PUT]}
    breaker: {failure_rate: 50%, open_for: 30s}
    cache: {ttl: 10m, methods: [GET]}
    spend: {per_request_usd: 0.002}
    budget: {limit_usd: 5, action: block}
    drift: {learn: true, action: warn}
  - name: other
    listen: 127.0.0.1:8082
    upstreams: ["http://127.0.0.1:9000"]
chaos:
  faults:
    - {name: slow, route: api, latency: 2s, probability: 5%}
"""


def edited(change) -> str:
    """BASE with `change(doc)` applied to its parsed form."""
    doc = yaml.safe_load(BASE)
    change(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def api(doc) -> dict:
    return doc["routes"][0]


def changes(old: str, new: str, tmp_path: Path = Path(".")):
    return diff_sides(load_side(old, "old.yaml", tmp_path), load_side(new, "new.yaml", tmp_path))


# (rule, how BASE changes, the path of the change) — one case per rule of the table.
RULE_CASES = [
    ("route-removed", lambda d: d["routes"].pop(1), "routes[other]"),
    ("listener-removed", lambda d: d.pop("proxy"), "proxy"),
    ("listener-moved", lambda d: api(d).update(listen="127.0.0.1:8091"), "routes[api].listen"),
    ("upstream-removed", lambda d: api(d)["upstreams"].pop(1), "routes[api].upstreams[backup]"),
    ("path-unmatched", lambda d: api(d)["match"].update(path="/v1/chat/**"),
     "routes[api].match.path"),
    ("drift-blocks", lambda d: api(d)["drift"].update(action="block"), "routes[api].drift.action"),
    ("retries-raised", lambda d: api(d)["retry"].update(attempts=5), "routes[api].retry.attempts"),
    ("retry-unsafe-methods", lambda d: api(d)["retry"].update(methods=["PUT", "POST"]),
     "routes[api].retry.methods"),
    ("timeout-raised", lambda d: api(d).update(timeout="2m"), "routes[api].timeout.total"),
    ("breaker-loosened", lambda d: api(d)["breaker"].update(failure_rate="80%"),
     "routes[api].breaker.failure_rate"),
    ("cache-enabled", lambda d: d["routes"][1].update(cache={"ttl": "5m"}), "routes[other].cache"),
    ("cache-ttl-raised", lambda d: api(d)["cache"].update(ttl="1h"), "routes[api].cache.ttl"),
    ("cache-post", lambda d: api(d)["cache"].update(methods=["GET", "POST"]),
     "routes[api].cache.methods"),
    ("budget-raised", lambda d: api(d)["budget"].update(limit_usd=20),
     "routes[api].budget.limit_usd"),
    ("budget-warns", lambda d: api(d)["budget"].update(action="warn"),
     "routes[api].budget.action"),
    ("fault-added", lambda d: d["chaos"]["faults"].append(
        {"name": "boom", "route": "api", "status": 503}), "chaos.faults[boom]"),
]


def test_every_rule_of_the_table_has_a_case_here():
    assert {r.name for r in RULES} == {name for name, _, _ in RULE_CASES}


def test_a_longer_first_token_or_idle_is_risky_and_shown_as_a_duration():
    base = BASE.replace("timeout: 30s", "timeout: {total: 30s, first_token: 5s, idle: 5s}")
    assert base != BASE
    found = changes(base, base.replace("first_token: 5s", "first_token: 20s")
                    .replace("idle: 5s", "idle: 10s"))
    assert sorted((c.path, c.rule) for c in found) == [
        ("routes[api].timeout.first_token", "timeout-raised"),
        ("routes[api].timeout.idle", "timeout-raised")]
    assert "5s" in found[0].explanation and "20s" in found[0].explanation + found[1].explanation


@pytest.mark.parametrize(("rule", "change", "path"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_rule(rule, change, path):
    found = changes(BASE, edited(change))
    assert [(c.path, c.rule) for c in found] == [(path, rule)]
    severity = next(r.severity for r in RULES if r.name == rule)
    assert found[0].severity == severity
    assert found[0].explanation and "\n" not in found[0].explanation


# The other direction of the same keys: no rule catches them, they are safe.
SAFE_CASES = [
    ("attempts lowered", lambda d: api(d)["retry"].update(attempts=1)),
    ("timeout lowered", lambda d: api(d).update(timeout="10s")),
    ("breaker tightened", lambda d: api(d)["breaker"].update(failure_rate="20%", open_for="1m")),
    ("path broadened", lambda d: api(d)["match"].update(path="/**")),
    ("budget lowered", lambda d: api(d)["budget"].update(limit_usd=1)),
    ("cache ttl lowered", lambda d: api(d)["cache"].update(ttl="1m")),
    ("upstream added", lambda d: api(d)["upstreams"].append({"name": "c", "url": "http://c"})),
    ("fault removed", lambda d: d.pop("chaos")),
    ("drift learns requests too", lambda d: api(d)["drift"].update(requests=True)),
]


@pytest.mark.parametrize(("what", "change"), SAFE_CASES, ids=[c[0] for c in SAFE_CASES])
def test_changes_no_rule_catches_are_safe(what, change):
    found = changes(BASE, edited(change))
    assert found and {c.severity for c in found} == {"safe"}, found


def test_reordering_routes_upstreams_faults_and_methods_is_no_change():
    def first(d):
        api(d)["cache"]["methods"] = ["GET", "HEAD"]
        api(d)["retry"]["on"] = ["429", "503", "timeout"]
        d["chaos"]["faults"].append({"name": "a", "route": "other", "status": 500})

    def reordered(d):
        first(d)
        route = api(d)
        route["upstreams"].reverse()
        route["cache"]["methods"].reverse()
        route["retry"]["on"].reverse()
        d["routes"].reverse()
        d["chaos"]["faults"].reverse()

    assert edited(first) != edited(reordered)
    assert changes(edited(first), edited(reordered)) == []


def test_a_renamed_upstream_is_one_rename():
    found = changes(BASE, edited(lambda d: api(d)["upstreams"][1].update(name="local")))
    assert [(c.path, c.kind, c.old, c.new, c.severity) for c in found] == [
        ("routes[api].upstreams[local]", "renamed", "backup", "local", "safe")]


def test_durations_and_percentages_compare_by_value():
    new = BASE.replace("timeout: 30s", "timeout: 30000ms").replace(
        "failure_rate: 50%", "failure_rate: 0.5").replace("ttl: 10m", "ttl: 600s").replace(
        "probability: 5%", "probability: 0.05")
    assert new != BASE and changes(BASE, new) == []


def test_writing_a_default_explicitly_is_no_change():
    new = BASE.replace("breaker: {failure_rate: 50%, open_for: 30s}",
                       "breaker: {failure_rate: 50%, open_for: 30s, window: 20, min_calls: 5}"
                       ).replace("strategy: fallback", "").replace(
        "    timeout: 30s\n", "    timeout: 30s\n    strategy: fallback\n").replace(
        '["http://127.0.0.1:9000"]', '["http://127.0.0.1:9000"]\n    retry: {attempts: 1}')
    assert new != BASE and changes(BASE, new) == []


def test_env_references_compare_as_written_and_need_no_secret(monkeypatch):
    monkeypatch.delenv("DIFF_TEST_KEY", raising=False)
    old = edited(lambda d: api(d)["upstreams"][0].update(
        headers={"authorization": "Bearer ${DIFF_TEST_KEY}"}))
    new = old.replace("DIFF_TEST_KEY", "DIFF_OTHER_KEY")
    monkeypatch.setenv("DIFF_OTHER_KEY", "sk-secret-never-shown")
    (found,) = changes(old, new)
    assert "${DIFF_OTHER_KEY}" in found.explanation and "sk-secret" not in found.explanation


# --- the command, through the installed entry point -------------------------------------------


def bridge(args, home: Path, cwd: Path, stdin: str | None = None):
    return subprocess.run([str(BRIDGE), "diff", *args], env=cli_env(home), cwd=cwd, text=True,
                          capture_output=True, timeout=60, input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture
def files(tmp_path):
    """old.yaml (BASE) and new.yaml (one breaking, one risky, one safe change)."""
    (tmp_path / "old.yaml").write_text(BASE)
    (tmp_path / "new.yaml").write_text(edited(lambda d: (
        api(d)["upstreams"].pop(1), api(d)["retry"].update(attempts=4),
        d["routes"][1].update(strategy="round_robin"))))
    return tmp_path


def test_the_terminal_view_groups_by_route_with_markers_and_a_summary(files):
    r = bridge(["old.yaml", "new.yaml"], files / "home", files)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines.index("route api") < lines.index("route other")
    assert any(re.match(r"\s+- breaking\s+upstreams\[backup\]$", x) for x in lines)
    assert any(re.match(r"\s+~ risky\s+retry\.attempts: 2 → 4$", x) for x in lines)
    assert any(re.match(r"\s+~ safe\s+strategy: fallback → round_robin$", x) for x in lines)
    assert lines[-1] == "3 changes: 1 breaking, 1 risky, 1 safe"


def test_markdown_is_a_pull_request_comment(files):
    r = bridge(["old.yaml", "new.yaml", "--format", "markdown"], files / "home", files)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("### bridge diff `old.yaml` → `new.yaml`\n\n**3 changes: "
                               "1 breaking, 1 risky, 1 safe**\n")
    assert "#### route api\n\n| | severity | key | change | why |\n|---|---|---|---|---|\n" \
        in r.stdout
    assert "| ~ | **risky** | `retry.attempts` | 2 → 4 | retry attempts raised" in r.stdout


def test_json_is_for_tools(files):
    r = bridge(["old.yaml", "new.yaml", "--format", "json"], files / "home", files)
    doc = json.loads(r.stdout)
    assert doc["summary"] == {"breaking": 1, "risky": 1, "safe": 1}
    attempts = next(c for c in doc["changes"] if c["path"] == "routes[api].retry.attempts")
    assert attempts | {"explanation": "-"} == {
        "route": "api", "path": "routes[api].retry.attempts", "old": 2, "new": 4,
        "kind": "changed", "severity": "risky", "explanation": "-", "rule": "retries-raised",
        "old_text": "2", "new_text": "4", "projection": None}
    assert json.loads(bridge(["old.yaml", "new.yaml", "--json"], files / "home",
                             files).stdout) == doc


@pytest.mark.parametrize(("fail_on", "new", "rc"), [
    (None, "new.yaml", 0), ("breaking", "new.yaml", 1), ("risky", "new.yaml", 1),
    ("breaking", "risky.yaml", 0), ("risky", "risky.yaml", 1), ("risky", "old.yaml", 0)])
def test_fail_on_sets_the_exit_code(files, fail_on, new, rc):
    (files / "risky.yaml").write_text(edited(lambda d: api(d)["retry"].update(attempts=3)))
    args = ["old.yaml", new] + (["--fail-on", fail_on] if fail_on else [])
    r = bridge(args, files / "home", files)
    assert r.returncode == rc, r.stdout + r.stderr


def test_the_old_side_can_come_from_standard_input(files):
    r = bridge(["-", "new.yaml", "--json"], files / "home", files, stdin=BASE)
    doc = json.loads(r.stdout)
    assert doc["old"] == "<stdin>" and doc["summary"] == {"breaking": 1, "risky": 1, "safe": 1}


@pytest.mark.parametrize(("text", "line"), [
    ("version: 2\nroutes: [\n", "error: bad.yaml:3: invalid YAML: "),
    ("version: 3\nroutes: []\n", "error: bad.yaml:1: version: unknown config version 3: "),
    ("services:\n  web: {image: nginx}\n", "error: bad.yaml:1: not a bridge config: none of "
                                            "bridge's keys (version, routes, proxy, ...) at the "
                                            "top, found services"),
])
def test_bad_input_is_one_line_and_exit_2(files, text, line):
    (files / "bad.yaml").write_text(text)
    r = bridge(["old.yaml", "bad.yaml"], files / "home", files)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(line) and len(r.stderr.splitlines()) == 1, r.stderr


def test_both_sides_invalid_gives_every_problem_one_line_each(files):
    (files / "a.yaml").write_text("version: 2\nroutes: {\n")
    (files / "b.yaml").write_text(BASE.replace("attempts: 2", "attempts: two").replace(
        "timeout: 30s", "timeout: soon"))
    r = bridge(["a.yaml", "b.yaml"], files / "home", files)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert [x.split(":")[1] for x in lines] == [" a.yaml", " b.yaml", " b.yaml"], lines
    assert "timeout" in lines[1] and "retry.attempts" in lines[2]


def test_a_version_1_file_is_migrated_in_memory_first(files):
    migrated = upgrade(load_yaml(CONNECTORS.read_text(), "c").data).doc
    (files / "same.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(migrated))))
    migrated["routes"][0]["retry"]["attempts"] = 5
    (files / "v2.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(migrated))))
    same = bridge([str(CONNECTORS), "same.yaml"], files / "home", files)
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[-1] == "No changes: the two configs mean the same."
    assert same.stderr == (f"{CONNECTORS}: a version 1 config, compared as `bridge migrate` "
                           "would write it\n")
    r = bridge([str(CONNECTORS), "v2.yaml", "--json"], files / "home", files)
    doc = json.loads(r.stdout)
    assert doc["migrated"] == {"old": 1}
    assert [(c["path"], c["old"], c["new"]) for c in doc["changes"]] == [
        ("routes[openai].retry.attempts", 3, 5)]


# --- the projection on recorded traffic ---------------------------------------------------


def test_recorded_traffic_projects_calls_and_spend(start_bridge, upstream, client, tmp_path):
    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=503)

    upstream.on("/fail", failing)
    old = one_route(("primary", upstream.url), ("backup", upstream.url), extra="""
        retry: {attempts: 2, backoff: {initial: 1ms, max: 1ms}}
        spend: {per_request_usd: 0.002}
    """)
    b = start_bridge(old)
    for path in ["/ok"] * 8 + ["/fail"] * 2:
        client.get(b.url("api") + path)
    b.stop()  # the flow log and the ledger are written out
    (tmp_path / "old.yaml").write_text(textwrap.dedent(old))
    new = textwrap.dedent(old).replace("attempts: 2", "attempts: 4").replace("0.002", "0.01")
    (tmp_path / "new.yaml").write_text("\n".join(x for x in new.splitlines()
                                                 if "name: backup" not in x) + "\n")
    r = bridge(["old.yaml", "new.yaml"], b.home, tmp_path)
    assert r.returncode == 0, r.stderr
    # 16 calls: 8 answered; 2 requests failed both tries at primary, then at backup. Each of
    # those 4 gets 2 more tries, which fail again at 8/16 (independently: 4 x 1.5), or
    # always if the failure persists (4 x 2).
    assert ("↳ at the last 7 days' traffic (10 requests), 50.0% of calls failed and could be "
            "retried: 2 requests ran out of tries (4 times, at one upstream each); +~6 upstream "
            "calls (up to +8 if the failures persist)") in r.stdout
    assert "↳ 2 of 10 requests ended there in the last 7 days" in r.stdout
    spend = re.search(r"↳ spend ≈ \$(\S+) → \$(\S+) per (\d+) requests", r.stdout)
    assert spend, r.stdout
    n = int(spend[3])
    assert spend[1] == f"{0.002 * n:.4f}" and spend[2] == f"{0.01 * n:.4f}"
    quiet = bridge(["old.yaml", "new.yaml"], tmp_path / "empty-home", tmp_path)
    assert "↳" not in quiet.stdout  # nothing recorded: nothing said
