"""What the `bridge` commands print, as a user reads it: the setting to paste into the app,
whole lines when piped, a cost that is never a silent zero, status counters that count
what their names say. Every command runs through the installed `bridge` entry point."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from tests.conftest import (
    cli_env,
    config_yaml,
    dead_url,
    json_answer,
    route_yaml,
    wait_for,
)

ENTRY = Path(sys.executable).with_name("bridge")
BRIDGE = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "bridge_cli"]

CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Paris."}}]}  # no usage
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class Up:
    """`bridge up ARGS` through the entry point, stdout and stderr going to files (not a
    terminal, as when piped or redirected)."""

    def __init__(self, args: list[str], cwd: Path, env: dict) -> None:
        self.out, self.err = cwd / "up.out", cwd / "up.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([*BRIDGE, "up", *args], cwd=cwd, env=env, stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL)
        wait_for(lambda: "flow log" in self.stdout() or self.proc.poll() is not None,
                 timeout=30, what="bridge up's listener lines")
        assert self.proc.poll() is None, self.err.read_text()

    def stdout(self) -> str:
        return self.out.read_text()

    def line_with(self, text: str) -> str:
        """The stdout line containing `text`, once printed."""
        return wait_for(lambda: next((ln for ln in self.stdout().splitlines() if text in ln), None),
                        what=f"a line with {text!r}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def up(tmp_path):
    """Start `bridge up` on `config` text with `args`, at most once per test; stopped at the end."""
    started: list[Up] = []

    def start(config: str, *args: str, columns: int = 80) -> Up:
        (tmp_path / "bridge.yaml").write_text(config)
        started.append(Up(["-c", "bridge.yaml", *args], tmp_path, cli_env(tmp_path / "home", columns)))
        return started[-1]

    yield start
    for u in started:
        u.stop()


def bridge(args: list[str], tmp_path: Path, columns: int = 80) -> subprocess.CompletedProcess:
    return subprocess.run([*BRIDGE, *args], cwd=tmp_path, env=cli_env(tmp_path / "home", columns),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


# --- what to point the app at -----------------------------------------------------------------


def test_the_printed_openai_base_url_works_as_is_with_the_openai_sdk(up, upstream):
    upstream.on("/v1/chat/completions", json_answer(CHAT))
    u = up(config_yaml(route_yaml("openai", ("primary", upstream.url), spend="{provider: openai}")))
    line = u.line_with("OPENAI_BASE_URL=")
    base_url = re.search(r"OPENAI_BASE_URL=(\S+)", line)[1]
    assert base_url.endswith("/v1") and base_url.startswith("http://127.0.0.1:")
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0,
                           http_client=httpx.Client(trust_env=False))
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert answer.choices[0].message.content == "Paris."
    assert upstream.calls[-1].path == "/v1/chat/completions"


def test_listener_lines_name_each_providers_sdk_setting_by_its_upstream_host(up, upstream):
    u = up(config_yaml(
        route_yaml("openai", ("o", "https://api.openai.com")),
        route_yaml("claude", ("a", "https://api.anthropic.com")),
        route_yaml("gemini", ("g", "https://generativelanguage.googleapis.com")),
        route_yaml("openai-v1", ("o", "https://api.openai.com/v1")),
        route_yaml("local", ("l", upstream.url))))
    assert re.search(r"OPENAI_BASE_URL=http://127\.0\.0\.1:\d+/v1 ", u.line_with(" openai "))
    # The Anthropic SDK adds /v1/messages itself, google-genai /v1beta/models/...
    assert re.search(r"ANTHROPIC_BASE_URL=http://127\.0\.0\.1:\d+ ", u.line_with("claude"))
    assert re.search(r"GOOGLE_GEMINI_BASE_URL=http://127\.0\.0\.1:\d+ ", u.line_with("gemini"))
    # An upstream that already carries /v1: the SDK's base is the listener itself.
    assert re.search(r"OPENAI_BASE_URL=http://127\.0\.0\.1:\d+ ", u.line_with("openai-v1"))
    # No provider known: no variable to guess, the address and what it stands for.
    local = u.line_with(" local ")
    assert "BASE_URL" not in local and upstream.url in local


def test_piped_output_is_never_cut_or_wrapped(up, upstream):
    long_url = upstream.url + "/a/rather/long/base/path/" + "x" * 80
    u = up(config_yaml(route_yaml("api", ("primary", long_url))), columns=80)
    out = u.stdout()
    assert "…" not in out
    line = u.line_with(" api ")
    assert long_url in line and re.search(r"http://127\.0\.0\.1:\d+", line)
    status = bridge(["status"], u.out.parent, columns=80)
    assert status.returncode == 0, status.stderr
    assert "…" not in status.stdout and long_url in status.stdout


@pytest.mark.parametrize("args", [[], ["--seed", "7"]])
def test_the_chaos_seed_is_printed_only_with_faults_or_a_seed(args, up, upstream):
    u = up(config_yaml(route_yaml("api", ("primary", upstream.url))), *args)
    if args:
        assert "replay this run with --seed 7" in u.line_with("chaos seed 7")
    else:  # no fault in the config, no seed given: nothing to replay, nothing said
        assert "chaos seed" not in u.stdout()


# --- the line per request: never a silent zero ------------------------------------------------


def _stream_without_usage() -> web.StreamResponse:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ("Par", "is."):
            chunk = {**CHAT, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return handler


def test_an_unpriced_call_shows_unpriced_and_an_estimate_shows_as_one(up, upstream_factory):
    plain, streaming = upstream_factory(), upstream_factory()
    plain.on("/v1/chat/completions", json_answer(CHAT))
    streaming.on("/v1/chat/completions", _stream_without_usage())
    u = up(config_yaml(
        route_yaml("plain", ("p", plain.url), spend="{provider: openai}"),
        route_yaml("metered", ("m", streaming.url), spend="{provider: openai}",
                   budget="{limit_usd: 5, period: day}")))
    base = {name: re.search(r"http://127\.0\.0\.1:\d+", u.line_with(f" {name} "))[0] + "/v1"
            for name in ("plain", "metered")}
    with httpx.Client(trust_env=False, timeout=10) as c:
        body = {"model": "gpt-4o-mini", "messages": QUESTION}
        assert c.post(base["plain"] + "/chat/completions", json=body).status_code == 200
        streamed = c.post(base["metered"] + "/chat/completions",
                          json={**body, "stream": True, "max_tokens": 100})
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
    unpriced = u.line_with("POST   plain")
    assert "unpriced" in unpriced and "$" not in unpriced, unpriced
    estimated = u.line_with("POST   metered")
    assert re.search(r" ~\$0\.\d{6} \(estimated\)", estimated), estimated


# --- bridge status ------------------------------------------------------------------------------


def test_status_counts_upstream_500s_and_failures_as_errors_and_shows_p50_per_route(
        start_bridge, upstream_factory, client, tmp_path):
    failing, fine = upstream_factory(), upstream_factory()
    failing.on("/v1/x", json_answer({"error": "boom"}, status=500))
    b = start_bridge(config_yaml(
        route_yaml("flaky", ("primary", failing.url)),
        route_yaml("pair", ("one", fine.url), ("two", fine.url)),
        route_yaml("gone", ("nobody", dead_url()))))
    for _ in range(4):
        assert client.get(b.url("flaky") + "/v1/x").status_code == 500
    for _ in range(2):
        assert client.get(b.url("pair") + "/v1/x").status_code == 200
    assert client.get(b.url("gone") + "/v1/x").status_code == 502
    wait_for(lambda: sum(r["requests"] for r in b.control().status()["routes"]) == 7)
    doc = json.loads(bridge(["status", "--json"], tmp_path).stdout)
    errors = {r["name"]: (r["requests"], r["errors"]) for r in doc["routes"]}
    assert errors == {"flaky": (4, 4), "pair": (2, 0), "gone": (1, 1)}

    human = bridge(["status"], tmp_path)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if "p50" in ln)
    rows = [ln.split() for ln in lines[header + 1:header + 4]]
    assert [r[0] for r in rows] == ["flaky", "pair", "gone"]
    for row in rows:  # route, requests, errors, p50, p99: a latency on every row
        assert re.fullmatch(r"\d+\.\d", row[3]), rows
    assert [row[2] for row in rows] == ["4", "0", "1"]


def test_status_help_says_what_errors_counts(tmp_path):
    text = bridge(["status", "--help"], tmp_path, columns=200).stdout
    assert "5xx" in text and "budget" in text


# --- bridge validate ----------------------------------------------------------------------------


def test_validate_json_gives_each_problem_as_fields_and_the_text_is_unchanged(tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("version: 2\nroutes:\n  - name: api\n    listen: 127.0.0.1:8081\n"
                   "    upstreams: [{name: a, url: 'http://127.0.0.1:9'}]\n"
                   "    retry: {attempts: three}\n")
    r = bridge(["validate", "--json", "typo.yaml"], tmp_path)
    assert r.returncode == 2
    (result,) = json.loads(r.stdout)
    (problem,) = result["errors"]
    assert problem == {"file": "typo.yaml", "line": 6, "key": "routes[0].retry.attempts",
                       "message": problem["message"]}
    assert problem["message"].startswith("expected an integer")
    text = bridge(["validate", "typo.yaml"], tmp_path)
    assert text.stderr.strip() == (
        f"error: typo.yaml:6: routes[0].retry.attempts: {problem['message']}")

    missing = json.loads(bridge(["validate", "--json", "nope.yaml"], tmp_path).stdout)
    assert missing[0]["errors"] == [{"file": "nope.yaml", "line": None, "key": None,
                                     "message": "no such config file"}]


@pytest.mark.parametrize("text", ["version: 1\nroutes: []\n", "connectors:\n  openai: {}\n"])
def test_a_version_1_config_says_what_to_do_naming_only_commands_that_exist(text, tmp_path):
    (tmp_path / "old.yaml").write_text(text)
    r = bridge(["validate", "old.yaml"], tmp_path)
    assert r.returncode == 2
    if "connectors" in text:
        assert "bridge migrate old.yaml --write" in r.stderr
    else:  # nothing to convert: by hand
        assert "version: 2" in r.stderr and "docs/config.md" in r.stderr
    for command in re.findall(r"`(bridge [a-z]+)", r.stderr):
        assert bridge([command.split()[1], "--help"], tmp_path).returncode == 0, command

