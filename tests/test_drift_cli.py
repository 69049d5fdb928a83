"""What a user sees of drift: `bridge drift` (list, show, accept, export) through the
installed `bridge` script with no bridge running, and GET /api/v1/drift on a real bridge.

The store is a real DiskStore in $BRIDGE_HOME, seeded the way the proxy fills it: a
Baseline observes plain JSON bodies, and DriftRecords records what it found.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import jsonschema
import pytest

from bridge_cli.engine.drift import Baseline, Finding
from bridge_cli.store import DiskStore, DriftRecords
from tests.conftest import cli_env, control_get, one_route

BRIDGE = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "bridge"
USERS = "GET /users/{id}"
ORDERS = "GET /orders/{id}"
CHAT_REQUEST = "POST /v1/chat/completions request"


def bridge(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`bridge ARGS` through the installed entry point; stdin is not a terminal."""
    return subprocess.run([str(BRIDGE), *args], env=cli_env(home), cwd=cwd,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def seed(home: Path, route: str, endpoint: str, *changes: dict) -> None:
    """Learn three {"id": int, "name": str} bodies of `endpoint`, then observe `changes`,
    saving the baseline and recording the findings as the proxy does."""
    store = DiskStore(home / "store")
    try:
        recs = DriftRecords(store, Baseline, Finding)
        b = recs.baselines(route).get((route, endpoint)) or Baseline()
        docs = [{"id": i, "name": "ann"} for i in range(3)] if not b.observations else []
        for n, doc in enumerate([*docs, *changes]):
            recs.record(b.observe(doc, now=1_700_000_000.0 + n, flow_id=f"flow-{n}",
                                  route=route, endpoint=endpoint))
        recs.save_baseline(route, endpoint, b)
    finally:
        store.close()


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def test_drift_lists_findings_and_exits_1_when_one_is_breaking(home):
    seed(home, "api", USERS, {"id": "u-7", "name": "ann"})
    seed(home, "api", ORDERS, {"id": 1, "name": "ann", "note": "x"})
    p = bridge(home, "drift")
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert "breaking" in lines[1] and USERS in lines[1] and "$.id" in lines[1]
    assert "integer → string" in lines[1] and "flow-3" in lines[1]
    assert any("additive" in line and "$.note" in line for line in lines)

    doc = json.loads(bridge(home, "drift", "--json").stdout)
    assert doc["breaking"] is True and doc["counts"]["breaking"] == 1
    assert [(f["endpoint"], f["kind"]) for f in doc["findings"]] == [
        (USERS, "type_changed"), (ORDERS, "field_added")]


def test_drift_exits_0_without_breaking_findings_and_route_filters(home):
    seed(home, "api", USERS, {"id": "u-7", "name": "ann"})
    seed(home, "billing", ORDERS, {"id": 1, "name": "ann", "note": "x"})
    p = bridge(home, "drift", "--route", "billing", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["breaking"] is False and {f["route"] for f in doc["findings"]} == {"billing"}

    typo = bridge(home, "drift", "--route", "biling")
    assert typo.returncode == 0 and "biling" in typo.stderr and "api, billing" in typo.stderr


def test_a_change_seen_again_is_one_finding_with_a_count(home):
    seed(home, "api", USERS, {"id": "u-7", "name": "ann"}, {"id": "u-8", "name": "bo"})
    [finding] = json.loads(bridge(home, "drift", "--json").stdout)["findings"]
    assert finding["count"] == 2 and finding["example_flow"] == "flow-3"


def test_help_documents_the_exit_statuses():
    p = subprocess.run([str(BRIDGE), "drift", "--help"], capture_output=True, text=True,
                       timeout=60, env=cli_env(Path("/nonexistent")) | {"COLUMNS": "200"})
    assert p.returncode == 0
    assert "1 breaking findings" in " ".join(p.stdout.split())


def test_show_prints_the_learned_schema_by_template_or_concrete_path(home):
    seed(home, "api", USERS)
    shown = json.loads(bridge(home, "drift", "show", USERS, "--json").stdout)
    assert [(s["route"], s["endpoint"], s["observations"]) for s in shown] == [("api", USERS, 3)]
    assert shown[0]["schema"]["properties"]["id"]["type"] == "integer"
    p = bridge(home, "drift", "show", "get /users/42")  # as the request went out
    assert p.returncode == 0 and '"integer"' in p.stdout and "3 bodies seen" in p.stdout

    err = one_line_error(bridge(home, "drift", "show", "GET /user/{id}"))
    assert "GET /users/{id}" in err  # names what it could have been


def test_accept_adopts_the_new_shape_so_the_change_is_no_longer_drift(home):
    seed(home, "api", USERS, {"id": "u-7", "name": "ann"})
    seed(home, "api", ORDERS, {"id": "o-1", "name": "ann"})
    p = bridge(home, "drift", "accept", "GET /users/1")
    assert p.returncode == 0, p.stderr
    assert "accepted 1 endpoint" in p.stderr

    doc = json.loads(bridge(home, "drift", "--json").stdout)
    assert [f["endpoint"] for f in doc["findings"]] == [ORDERS]
    seed(home, "api", USERS, {"id": "u-9", "name": "cy"})  # the accepted shape is normal now
    assert [f["endpoint"] for f in json.loads(bridge(home, "drift", "--json").stdout)[
        "findings"]] == [ORDERS]


def test_accept_of_everything_needs_yes_off_a_terminal(home):
    seed(home, "api", USERS, {"id": "u-7", "name": "ann"})
    assert "--yes" in one_line_error(bridge(home, "drift", "accept"))
    assert bridge(home, "drift").returncode == 1  # nothing was accepted

    p = bridge(home, "drift", "accept", "--yes", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["accepted"] == 1
    assert bridge(home, "drift").returncode == 0


def test_export_writes_one_committable_schema_per_endpoint(home, tmp_path):
    seed(home, "api", USERS)
    seed(home, "api", CHAT_REQUEST)
    out = tmp_path / "team" / "schemas"
    p = bridge(home, "drift", "export", str(out))
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in out.iterdir())
    assert names == ["api__GET__users_id.json", "api__POST__v1_chat_completions__request.json"]
    schema = json.loads((out / "api__GET__users_id.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "api: GET /users/{id}"
    jsonschema.validate({"id": 5, "name": "x"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "5", "name": "x"}, schema)

    # the file is what a route's `drift: {schema: FILE}` takes
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(one_route(("up", "http://127.0.0.1:1"), extra=(
        f"drift: {{schema: {out / 'api__GET__users_id.json'}}}")))
    assert bridge(home, "validate", str(cfg)).returncode == 0


def test_export_refuses_to_overwrite_without_force(home, tmp_path):
    seed(home, "api", USERS)
    out = tmp_path / "schemas"
    out.mkdir()
    (out / "api__GET__users_id.json").write_text("mine")
    err = one_line_error(bridge(home, "drift", "export", str(out)))
    assert "--force" in err and (out / "api__GET__users_id.json").read_text() == "mine"
    assert bridge(home, "drift", "export", str(out), "--force").returncode == 0
    assert json.loads((out / "api__GET__users_id.json").read_text())["title"]


def test_export_with_nothing_learned_says_so(home, tmp_path):
    err = one_line_error(bridge(home, "drift", "export", str(tmp_path / "s")))
    assert "learn" in err and not (tmp_path / "s").exists()


def test_control_api_serves_the_findings_of_the_running_bridges_store(start_bridge, upstream,
                                                                      bridge_home):
    b = start_bridge(one_route(("up", upstream.url)))
    seed(bridge_home, "api", USERS, {"id": "u-7", "name": "ann"})
    control = json.loads((bridge_home / "control.json").read_text())
    doc = control_get(control, "drift")
    assert doc["breaking"] is True
    assert [(f["route"], f["endpoint"], f["path"]) for f in doc["findings"]] == [
        ("api", USERS, "$.id")]
    assert doc == json.loads(bridge(bridge_home, "drift", "--json").stdout)

    r = httpx.get(b.control_url + "/api/v1/drift?route=nope", trust_env=False, timeout=10,
                  headers={"Authorization": f"Bearer {control['token']}"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "bad_request"
    assert "api" in r.json()["error"]["message"]
