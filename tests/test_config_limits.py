"""A config can't take bridge down: a file too big, aliases that expand to billions of
values, nesting thousands deep, control characters or numbers of thousands of digits are
refused in one line by `bridge validate` and `bridge up` (exit 2), and by a reload, which
keeps the old config serving and the watcher watching."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import bridge_cmd, cli_env, one_route, wait_for

# 9**9 values from a few hundred bytes, where the checks look at them (a model id)
LAUGHS = "lol: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
) + "pricing: [{provider: openai, id: *a8, prices: {input_mtok: 1}}]\n"

# (what the file holds, what is appended to a valid config, words the one-line error has)
BAD = {
    "over 1 MiB": ("# padding\n" * (1 << 17), ["larger than 1 MiB", "right file"]),
    "billion laughs": (LAUGHS, ["aliases", "more than 100,000 values", "nest fewer aliases"]),
    "too many aliases": ("x: &x 1\nxs: [" + ", ".join(["*x"] * 501) + "]\n",
                         ["more than 500 YAML aliases", "write the values out"]),
    "alias in itself": ("x: &x [1, *x]\n", ["contains it", "remove the alias"]),
    "nested 65 deep": ("x: " + "[" * 65 + "]" * 65 + "\n", ["deeper than 64 levels", "flatten"]),
    "nested 50 000 deep": ("x: " + "[" * 50_000 + "]" * 50_000 + "\n",
                           ["deeper than 64 levels", "flatten"]),
    "NUL byte": ("x: a\x00b\n", ["NUL byte (U+0000)", "remove it"]),
    "escape character": ("x: \x1b[31mred\n", ["control character (U+001B)", "remove it"]),
    "5000-digit integer": ("x: " + "9" * 5000 + "\n", ["5000 digits", "more than the 30"]),
}


def bad_config(kind: str, upstream_url: str = "http://127.0.0.1:9") -> str:
    return one_route(("first", upstream_url)) + BAD[kind][0]


@pytest.fixture
def env(tmp_path) -> dict:
    return cli_env(tmp_path / "home")


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


@pytest.mark.parametrize("kind", BAD)
def test_validate_refuses_a_config_beyond_a_limit_in_one_line(kind, tmp_path, env):
    path = tmp_path / "bridge.yaml"
    path.write_text(bad_config(kind))
    err = one_line_error(bridge_cmd(["validate", str(path)], env, tmp_path))
    assert str(path) in err
    for words in BAD[kind][1]:
        assert words in err


def test_validate_dev_zero_ends_at_once_with_the_size_error(tmp_path, env):
    err = one_line_error(bridge_cmd(["validate", "/dev/zero"], env, tmp_path, timeout=20))
    assert "/dev/zero: larger than 1 MiB" in err


@pytest.mark.parametrize("kind", ["nested 50 000 deep", "5000-digit integer"])
def test_up_refuses_a_config_beyond_a_limit_with_exit_2(kind, tmp_path, env):
    path = tmp_path / "bridge.yaml"
    path.write_text(bad_config(kind))
    err = one_line_error(bridge_cmd(["up", "-c", str(path)], env, tmp_path, timeout=30))
    assert BAD[kind][1][0] in err


def test_a_config_at_the_limits_is_valid(tmp_path, env):
    path = tmp_path / "bridge.yaml"
    path.write_text(one_route(("first", "http://127.0.0.1:9")) + "x-base: &b {timeout: 3s}\n"
                    + "x-nested: " + "[" * 63 + "]" * 63 + "\n"
                    + "x-aliases: [" + ", ".join(["*b"] * 500) + "]\n"
                    + "x-number: " + "9" * 30 + "\n")
    text = path.read_text()
    path.write_text(text + "#" * ((1 << 20) - len(text) - 1) + "\n")  # exactly 1 MiB
    r = bridge_cmd(["validate", str(path)], env, tmp_path)
    assert r.returncode == 2  # x-... keys are unknown: the limits passed, the schema spoke
    assert "unknown key 'x-base'" in r.stderr and "Traceback" not in r.stderr
    assert "1 MiB" not in r.stderr and "deeper" not in r.stderr and "digits" not in r.stderr


@pytest.mark.parametrize("match, words", [
    ("{starts_with: 5}", "pricing[0].match.starts_with: expected a non-empty string, got 5"),
    ("{equals: [gpt]}", "pricing[0].match.equals: expected a non-empty string, got"),
    ("{contains: gpt}", "pricing[0].match: key 'contains' is not allowed here: expected equals or starts_with"),
])
def test_validate_refuses_a_pricing_match_that_is_not_a_string(match, words, tmp_path, env):
    path = tmp_path / "bridge.yaml"
    pricing = f"""pricing:
  - {{provider: openai, id: acme, match: {match}, prices: {{input_mtok: 1, output_mtok: 2}}}}
"""
    path.write_text(one_route(("first", "http://127.0.0.1:9"), top=pricing))
    err = one_line_error(bridge_cmd(["validate", str(path)], env, tmp_path))
    assert words in err
    path.write_text(one_route(("first", "http://127.0.0.1:9"),
                              top=pricing.replace(match, '{starts_with: "5"}')))
    assert bridge_cmd(["validate", str(path)], env, tmp_path).returncode == 0


# --- reload ----------------------------------------------------------------------------------


def error_notices(br) -> list[str]:
    return [e.message for e in br.events() if e.kind == "notice" and e.level == "error"]


def test_the_watcher_refuses_every_bad_file_and_applies_the_next_good_one(
        start_bridge, upstream, client):
    br = start_bridge(one_route(("first", upstream.url)), watch=True)
    for kind, (_, words) in BAD.items():
        seen = len(error_notices(br))
        br.config_path.write_text(bad_config(kind, upstream.url))
        message = wait_for(lambda seen=seen: error_notices(br)[seen:], what=f"the notice of {kind}")[0]
        assert "old config keeps serving" in message and "\n" not in message
        assert all(w in message for w in words), message
        assert client.get(br.url("api") + "/still").status_code == 200
    br.config_path.write_text(one_route(("second", upstream.url)))
    wait_for(lambda: br.bridge.state.config.routes[0].upstreams[0].name == "second",
             what="the good edit applied")
    assert client.get(br.url("api") + "/after").headers["x-bridge-upstream"] == "second"


def test_reload_through_the_api_answers_json_for_a_bad_file(start_bridge, upstream, client):
    br = start_bridge(one_route(("first", upstream.url)))
    br.config_path.write_text(bad_config("nested 50 000 deep", upstream.url))
    r = client.post(br.control_url + "/api/v1/reload",
                    headers={"Authorization": f"Bearer {br.token}"})
    assert r.status_code == 422
    assert r.json()["applied"] is False
    assert "deeper than 64 levels" in r.json()["message"]
    assert client.get(br.url("api") + "/still").status_code == 200


def test_a_big_config_reloads_while_requests_keep_flowing(start_bridge, upstream, client):
    br = start_bridge(one_route(("first", upstream.url)))
    prices = "".join(f"  - {{provider: openai, id: acme-{i:05d}, match: {{starts_with: acme-{i:05d}}},"
                     f" prices: {{input_mtok: 1.5, output_mtok: 2}}}}\n" for i in range(3600))
    br.config_path.write_text(one_route(("second", upstream.url), top="pricing:\n" + prices))
    assert 400_000 < br.config_path.stat().st_size < 500_000
    reload = asyncio.run_coroutine_threadsafe(br.bridge.reload(), br.lt.loop)
    during = 0  # requests that began and ended while the reload was checking the file
    while not reload.done():
        r = client.get(br.url("api") + "/during")
        assert r.status_code == 200
        during += not reload.done()
    assert reload.result(30).applied
    assert len(br.bridge.state.config.pricing) == 3600
    assert during >= 3, f"only {during} request(s) answered while the config loaded"
