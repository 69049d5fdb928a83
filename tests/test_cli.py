"""The `bridge` command as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from bridge_cli.config.loader import load_config
from tests.conftest import bridge_cmd, cli_env, control_get, start_up, stop


@pytest.fixture
def env(tmp_path) -> dict:
    return cli_env(tmp_path / "home")


def test_up_without_config_runs_the_builtin_default_and_status_sees_it(tmp_path, env, upstream):
    proc, control = start_up(["--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0"],
                             tmp_path, env)
    try:
        st = bridge_cmd(["status", "--json"], env, tmp_path)
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["config"] == "<built-in default>"
        proxy = next(lst for lst in status["listeners"] if lst["kind"] == "proxy")
        with httpx.Client(proxy=f"http://{proxy['address']}", trust_env=False) as c:
            assert c.get(upstream.url + "/through").json()["path"] == "/through"
        human = bridge_cmd(["status"], env, tmp_path)
        assert human.returncode == 0 and proxy["address"] in human.stdout
    finally:
        out, err = stop(proc)
    assert "built-in default" in err
    assert f"http://{proxy['address']}" in out  # the listener line: what to point the app at
    assert "GET" in out and "/through" in out  # the live line per request
    assert proc.returncode == 0


def test_up_prints_a_line_per_request_unless_quiet(tmp_path, env, upstream):
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(f"""version: 2
control: {{listen: 127.0.0.1:0}}
routes:
  - name: api
    listen: 127.0.0.1:0
    upstreams: [{{name: local, url: "{upstream.url}"}}]
""")
    proc, control = start_up(["-q"], tmp_path, env)  # ./bridge.yaml is found by itself
    try:
        status = control_get(control, "status")
        addr = status["listeners"][0]["address"]
        assert httpx.get(f"http://{addr}/quiet-please", trust_env=False).status_code == 200
    finally:
        out, err = stop(proc)
    assert "bridge.yaml (found in the current directory)" in err
    assert "/quiet-please" not in out


def test_status_without_a_running_bridge_says_so_in_one_line(tmp_path, env):
    r = bridge_cmd(["status"], env, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "no bridge is running" in r.stderr and "bridge up" in r.stderr


def test_up_with_a_busy_port_names_the_key_and_exits_2(tmp_path, env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "busy.yaml"
        cfg.write_text(f"""version: 2
control: {{listen: 127.0.0.1:0}}
routes:
  - name: api
    listen: 127.0.0.1:{port}
    upstreams: [{{name: x, url: "http://127.0.0.1:9"}}]
""")
        r = bridge_cmd(["up", "-c", str(cfg)], env, tmp_path)
    assert r.returncode == 2
    assert "routes[api].listen" in r.stderr and "already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_up_refuses_an_invalid_config_before_binding(tmp_path, env):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("version: 2\nroutes:\n  - name: api\n    listen: 127.0.0.1:0\n    upstreams: []\n")
    r = bridge_cmd(["up", "-c", str(cfg)], env, tmp_path)
    assert r.returncode == 2
    assert "bad.yaml:5" in r.stderr
    assert "Traceback" not in r.stderr


def test_up_refuses_a_redis_store_until_it_exists(tmp_path, env):
    cfg = tmp_path / "redis.yaml"
    cfg.write_text("version: 2\ncontrol: {listen: 127.0.0.1:0}\nstore: redis://127.0.0.1:6379/0\n")
    r = bridge_cmd(["up", "-c", str(cfg)], env, tmp_path)
    assert r.returncode == 2
    assert "redis" in r.stderr and "Traceback" not in r.stderr


def test_up_warns_once_about_keys_it_does_not_enforce_yet(tmp_path, env):
    cfg = tmp_path / "later.yaml"
    cfg.write_text("""version: 2
control: {listen: 127.0.0.1:0}
routes:
  - name: api
    listen: 127.0.0.1:0
    upstreams: [{name: x, url: "http://127.0.0.1:9"}]
    rate_limit: 100/min
    drift: {learn: true}
""")
    proc, _ = start_up(["-c", str(cfg)], tmp_path, env)
    out, err = stop(proc)
    assert err.count("routes[api].rate_limit") == 1 and "not enforced" in err
    assert "routes[api].drift" not in err  # enforced


def test_validate_reports_file_line_and_key_and_exits_2(tmp_path, env):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("version: 2\nroutes:\n  - name: api\n    listen: 127.0.0.1:8081\n"
                   "    upstreams: [{name: a, url: 'http://127.0.0.1:9'}]\n    retyr: {attempts: 2}\n")
    r = bridge_cmd(["validate", str(cfg)], env, tmp_path)
    assert r.returncode == 2
    assert "typo.yaml:6" in r.stderr and "retyr" in r.stderr and "retry" in r.stderr
    good = bridge_cmd(["validate", "--json", str(cfg.with_name("ok.yaml"))], env, tmp_path)
    assert good.returncode == 2  # a missing file is an error too, not a traceback
    assert "Traceback" not in good.stderr


def test_init_writes_a_starter_that_validates_and_never_overwrites(tmp_path, env):
    r = bridge_cmd(["init"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "bridge.yaml").read_text()
    assert text.lstrip().startswith("#")  # commented
    load_config(tmp_path / "bridge.yaml")
    again = bridge_cmd(["init"], env, tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert (tmp_path / "bridge.yaml").read_text() == text


def test_init_list_and_recipe(tmp_path, env):
    listed = bridge_cmd(["init", "--list", "--json"], env, tmp_path)
    names = {r["name"] for r in json.loads(listed.stdout)}
    assert {"openai", "anthropic", "openai-with-local-fallback", "github-api-cache",
            "flaky-upstream"} <= names
    assert all(r["description"] for r in json.loads(listed.stdout))
    r = bridge_cmd(["init", "--recipe", "openai-with-local-fallback", "-o", "fb.yaml"], env,
                   tmp_path)
    assert r.returncode == 0, r.stderr
    assert load_config(tmp_path / "fb.yaml").route("openai") is not None or \
        len(load_config(tmp_path / "fb.yaml").routes) >= 1
    bad = bridge_cmd(["init", "--recipe", "nope"], env, tmp_path)
    assert bad.returncode == 2 and "bridge init --list" in bad.stderr


def test_ca_prints_the_cert_path_and_trust_lines(tmp_path, env):
    r = bridge_cmd(["ca"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    cert = Path(env["BRIDGE_HOME"]) / "mitmproxy" / "mitmproxy-ca-cert.pem"
    assert cert.exists() and "BEGIN CERTIFICATE" in cert.read_text()
    bundle = cert.parent / "bridge-ca-bundle.pem"  # the system's CAs plus bridge's
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        assert f"export {var}={bundle}" in r.stdout
    assert f"export NODE_EXTRA_CA_CERTS={cert}" in r.stdout  # Node adds it to its own CAs
    assert cert.read_text().strip() in bundle.read_text()
    j = json.loads(bridge_cmd(["ca", "--json"], env, tmp_path).stdout)
    assert j["cert"] == str(cert) and j["bundle"] == str(bundle)
    assert j["env"]["SSL_CERT_FILE"] == str(bundle)


def test_bad_cli_input_is_one_line_and_exit_2(tmp_path, env):
    r = bridge_cmd(["up", "--listen", "nonsense"], env, tmp_path)
    assert r.returncode == 2
    assert "--listen" in r.stderr and "Traceback" not in r.stderr


def test_every_command_has_help_with_an_example(tmp_path, env):
    for cmd in (["up"], ["init"], ["validate"], ["ca"], ["status"]):
        r = bridge_cmd([*cmd, "--help"], env, tmp_path)
        assert r.returncode == 0
        assert "Example" in r.stdout, cmd


def test_usage_errors_from_the_parser_are_exit_2_without_a_traceback(tmp_path, env):
    for args in (["validate"], ["up", "--listen"], ["no-such-command"], ["chaos", "inject", "--count", "x"]):
        r = bridge_cmd(args, env, tmp_path)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr, args
