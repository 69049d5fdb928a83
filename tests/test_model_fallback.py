"""Model-level fallback (issue 24): an upstream entry rewrites the request for itself
(`model:`, `headers:`, `params:`), on a real bridge, real upstreams, the official SDK.

Several entries share one upstream server here, as they would share one provider's host:
what that server received says which rewrite each try carried.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from aiohttp import web

from bridge_cli.engine.clock import ManualClock
from tests.conftest import (
    breaker_moves,
    cli_env,
    config_yaml,
    flow_event,
    openai_sdk,
    tries,
    wait_for,
)
from tests.test_spend import chat_body, chat_usage

CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# POST is not resent by default; a 500 from the primary moves on to the next entry.
BRIDGE = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "bridge")
RETRY = "retry: {on: [500, 503], methods: [POST]}"


def by_model(fails: set[str]):
    """An OpenAI-like chat endpoint: 500 for a model in `fails`, else an answer naming the
    model the request asked for."""

    async def handler(request: web.Request) -> web.Response:
        model = json.loads(await request.read())["model"]
        if model in fails:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}},
                                     status=500)
        return web.json_response(chat_body(model, chat_usage(12, 5)))

    return handler


def entries(url: str, *items: str) -> str:
    """A route `api` whose upstream entries (flow YAML mappings without url) all use `url`."""
    lines = ["  - name: api", "    listen: 127.0.0.1:0", "    upstreams:"]
    lines += [f'      - {{url: "{url}", {item}}}' for item in items]
    return "\n".join(lines) + "\n"


def sent(upstream) -> list[dict]:
    """The JSON bodies the upstream server received, in order."""
    return [json.loads(c.body) for c in upstream.calls]


def test_a_failing_model_falls_back_to_another_model_on_the_same_host_and_is_billed_as_it(
        start_bridge, upstream):
    upstream.on(CHAT, by_model({"gpt-4o"}))
    b = start_bridge(config_yaml(entries(
        upstream.url, "name: primary, model: gpt-4o", "name: backup, model: gpt-4o-mini",
    ) + f"    spend: {{provider: openai}}\n    {RETRY}\n"))
    raw = openai_sdk(b).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=QUESTION)
    answer = raw.parse()

    assert answer.model == "gpt-4o-mini"
    assert answer.usage.prompt_tokens == 12 and answer.usage.completion_tokens == 5
    assert [d["model"] for d in sent(upstream)] == ["gpt-4o", "gpt-4o-mini"]
    assert all(d["messages"] == QUESTION for d in sent(upstream))
    event = flow_event(b, rid=raw.headers["x-bridge-request-id"])
    assert tries(event) == [("primary", "500"), ("backup", "ok")]
    assert event.upstream == "backup"

    report = {}

    def settled() -> bool:
        report.update(b.control().spend(None, "model"))
        return report["calls"] >= 1

    wait_for(settled, what="the call in the ledger")
    assert [(g["model"], g["calls"]) for g in report["groups"]] == [("gpt-4o-mini", 1)]
    assert report["groups"][0]["cost_usd"] != "0"


def test_an_upstreams_own_key_comes_from_the_environment_and_stays_out_of_the_flow_log(
        start_bridge, upstream, monkeypatch):
    secret = "sk-backup-7f3c9e1d2b"
    monkeypatch.setenv("BACKUP_KEY", secret)
    upstream.on(CHAT, by_model(set()))
    b = start_bridge(config_yaml(entries(
        upstream.url, 'name: backup, headers: {authorization: "Bearer ${BACKUP_KEY}"}')))
    raw = openai_sdk(b).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=QUESTION)
    assert raw.http_response.status_code == 200

    (call,) = upstream.calls
    auth = [v for k, v in call.headers.items() if k.lower() == "authorization"]
    assert auth == [f"Bearer {secret}"]  # the client's sk-test replaced, not doubled
    flow_event(b, rid=raw.headers["x-bridge-request-id"])
    log = b.home / "flows.jsonl"
    wait_for(lambda: log.exists() and raw.headers["x-bridge-request-id"] in log.read_text(),
             what="the flow log line")
    assert secret not in log.read_text()


def test_a_missing_environment_variable_is_a_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("BACKUP_KEY", raising=False)
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_yaml(entries(
        "http://127.0.0.1:9", 'name: backup, headers: {authorization: "Bearer ${BACKUP_KEY}"}')))
    env = cli_env(tmp_path / "home")
    env.pop("BACKUP_KEY", None)
    r = subprocess.run([BRIDGE, "validate", str(cfg)], env=env, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert "BACKUP_KEY" in lines[0] and "headers.authorization" in lines[0]


def test_params_set_and_drop_body_fields_for_that_upstream_only(start_bridge, upstream):
    upstream.on(CHAT, by_model({"gpt-4o"}))
    b = start_bridge(config_yaml(entries(
        upstream.url, "name: primary",
        "name: backup, model: gpt-4o-mini, params: {temperature: 0, logprobs: null}",
    ) + f"    {RETRY}\n"))
    answer = openai_sdk(b).chat.completions.create(
        model="gpt-4o", messages=QUESTION, temperature=0.7, logprobs=True, top_p=0.9)

    assert answer.model == "gpt-4o-mini"
    first, second = sent(upstream)
    # the primary got the client's body as it was; the backup's rewrite was its own
    assert (first["model"], first["temperature"], first["logprobs"]) == ("gpt-4o", 0.7, True)
    assert second["model"] == "gpt-4o-mini" and second["temperature"] == 0
    assert "logprobs" not in second
    assert second["top_p"] == 0.9 and second["messages"] == QUESTION


def test_a_body_that_is_not_a_json_object_is_sent_unchanged(start_bridge, upstream, client):
    b = start_bridge(config_yaml(entries(
        upstream.url, "name: only, model: gpt-4o-mini, params: {temperature: 0}")))
    for body in (b"[1, 2]", b"model=gpt-4o", b'{"model": "gpt-4o",'):
        r = client.post(b.url("api") + "/v1/x", content=body)
        assert r.status_code == 200
        assert upstream.calls[-1].body == body


def test_breakers_are_per_upstream_entry_not_per_host(start_bridge, upstream):
    upstream.on(CHAT, by_model({"gpt-4o"}))
    b = start_bridge(config_yaml(entries(
        upstream.url, "name: primary, model: gpt-4o", "name: backup, model: gpt-4o-mini",
    ) + f"    {RETRY}\n"
        "    breaker: {failure_rate: 50%, window: 2, min_calls: 2, open_for: 30s}\n"),
        clock=ManualClock())
    sdk = openai_sdk(b)
    for _ in range(2):  # the primary fails twice: its breaker opens
        assert sdk.chat.completions.create(model="gpt-4o", messages=QUESTION).model \
            == "gpt-4o-mini"
    wait_for(lambda: breaker_moves(b, "primary") == [("closed", "open")],
             what="the primary's breaker to open")

    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=QUESTION)
    assert raw.parse().model == "gpt-4o-mini"
    # the same host keeps serving through the backup entry, whose breaker stays closed
    assert tries(flow_event(b, rid=raw.headers["x-bridge-request-id"])) == [
        ("primary", "breaker_open"), ("backup", "ok")]
    assert [d["model"] for d in sent(upstream)] == ["gpt-4o", "gpt-4o-mini"] * 2 + [
        "gpt-4o-mini"]
    assert breaker_moves(b, "backup") == []


def test_an_answer_that_names_no_model_is_billed_as_the_entry_model(start_bridge, upstream):
    """An OpenAI-compatible endpoint that leaves `model` out of its answer: the call is
    priced as the model its entry asked for, not the one the client named."""

    async def handler(request: web.Request) -> web.Response:
        body = chat_body("x", chat_usage(1000, 500))
        body.pop("model")
        return web.json_response(body)

    upstream.on(CHAT, handler)
    b = start_bridge(config_yaml(entries(upstream.url, "name: backup, model: gpt-4o-mini")
                                 + "    spend: {provider: openai}\n"))
    openai_sdk(b).chat.completions.create(model="gpt-4o", messages=QUESTION)
    report = {}

    def settled() -> bool:
        report.update(b.control().spend(None, "model"))
        return report["calls"] >= 1

    wait_for(settled, what="the call in the ledger")
    assert [g["model"] for g in report["groups"]] == ["gpt-4o-mini"]
