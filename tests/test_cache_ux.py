"""`bridge cache ls` and `bridge cache export | import` as a user meets them: entries a
person can tell apart, and cassettes a reviewer can read. A real bridge on loopback, real
upstreams, the installed `bridge` script as the user runs it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bridge_cli.common.entry import make_entry
from bridge_cli.engine.cache import ReplayMode
from bridge_cli.store.responses import EntryStore
from tests.conftest import cli_env, config_yaml, route_yaml, wait_for

BRIDGE = Path(sys.executable).with_name("bridge")  # the venv's entry point
KEY = "sk-proj-Secret0123456789abcdefSecret"
PROMPT = (f"Say hello in French to my colleague Marie, and my key is {KEY} so please be "
          "quick about it")
COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "¡Hola! Bonjour, Marie."}}],
    "usage": {"prompt_tokens": 19, "completion_tokens": 6, "total_tokens": 25},
}
# As the upstream sends it: indented, non-ASCII as UTF-8. A replay must give these bytes.
COMPLETION_BYTES = json.dumps(COMPLETION, indent=2, ensure_ascii=False).encode() + b"\n"
CHUNKS = [b'data: {"model": "gpt-4o-mini", "choices": [{"delta": {"content": "Bon"}}]}\n\n',
          b'data: {"model": "gpt-4o-mini", "choices": [{"delta": {"content": "jour"}}]}\n\n',
          b"data: [DONE]\n\n"]
BLOB = bytes(range(256)) * 4  # not UTF-8: stays base64


def bridge(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """The installed `bridge ARGS` on BRIDGE_HOME `home`, run to its end."""
    return subprocess.run([str(BRIDGE), *args], env=cli_env(home), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def llm_upstream(upstream) -> None:
    """Chat completions (a stream when asked), a binary download and a model list."""

    async def completions(request: web.Request) -> web.StreamResponse:
        if (await request.json()).get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for c in CHUNKS:
                await resp.write(c)
            await resp.write_eof()
            return resp
        return web.Response(body=COMPLETION_BYTES, content_type="application/json")

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=BLOB, content_type="application/octet-stream")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "gpt-4o"}]})

    upstream.on("/v1/chat/completions", completions)
    upstream.on("/blob", blob)
    upstream.on("/v1/models", models)


def chat(prompt: str, model: str = "gpt-4o", stream: bool = False) -> dict:
    return {"model": model, "stream": stream,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Earlier question"},
                         {"role": "assistant", "content": "Earlier answer"},
                         {"role": "user", "content": [{"type": "text", "text": prompt}]}]}


def ask_all(client: httpx.Client, base: str) -> dict[str, httpx.Response]:
    """The same requests, online or offline."""
    auth = {"Authorization": f"Bearer {KEY}"}
    return {
        "chat": client.post(base + "/v1/chat/completions", json=chat(PROMPT), headers=auth),
        "other": client.post(base + "/v1/chat/completions",
                             json=chat("What is the capital of Peru?"), headers=auth),
        "stream": client.post(base + "/v1/chat/completions",
                              json=chat("Count to two", "gpt-4o-mini", stream=True), headers=auth),
        "blob": client.get(base + "/blob"),
        "models": client.get(base + "/v1/models?limit=2"),
    }


def stored(directory: Path, n: int) -> list[dict]:
    """The summaries of a cache namespace or cassette, once it holds `n` entries."""

    def read():
        if not directory.exists():
            return None
        es = EntryStore(directory)
        try:
            got = [s for _, s in es.summaries()]
        finally:
            es.close()
        return got if len(got) == n else None

    return wait_for(read, what=f"{n} entries in {directory}")


def ls_rows(home: Path, *args: str) -> list[dict]:
    r = bridge(["cache", "ls", "--json", *args], home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cache_ls_tells_llm_calls_apart_by_model_and_prompt(start_bridge, upstream, client):
    llm_upstream(upstream)
    b = start_bridge(config_yaml(route_yaml("openai", ("up", upstream.url),
                                            cache="{methods: [GET, POST]}")))
    got = ask_all(client, b.url("openai"))
    assert all(r.status_code == 200 for r in got.values())
    stored(b.home / "cache" / "openai", 5)

    rows = sorted((r["model"] or "", r["prompt"] or "", r["path"]) for r in ls_rows(b.home))
    assert [(m, p[:41], path) for m, p, path in rows] == [
        ("", "", "/blob"),
        ("", "", "/v1/models?limit=2"),
        ("gpt-4o", "Say hello in French to my colleague Marie", "/v1/chat/completions"),
        ("gpt-4o", "What is the capital of Peru?", "/v1/chat/completions"),
        ("gpt-4o-mini", "Count to two", "/v1/chat/completions"),
    ]
    said = rows[2][1]  # the last user prompt, its key redacted as docs/reliability.md says
    assert said.startswith("Say hello") and "is sk-…[redacted:sha256:" in said

    human = bridge(["cache", "ls"], b.home)
    assert human.returncode == 0, human.stderr
    out = human.stdout
    assert 'gpt-4o  "Say hello in French to my colleague Marie,…"' in out
    assert 'gpt-4o  "What is the capital of Peru?"' in out
    assert 'gpt-4o-mini  "Count to two"' in out
    assert "GET /v1/models?limit=2" in out and "GET /blob" in out
    assert len([line for line in out.splitlines() if "gpt-4o" in line]) == 3  # one line each
    for r in (human, bridge(["cache", "ls", "--json"], b.home)):
        assert KEY not in r.stdout and KEY[:16] not in r.stdout


def test_an_entry_stored_before_prompts_were_kept_shows_the_model_its_answer_names(
        bridge_home):
    es = EntryStore(bridge_home / "cassettes" / "old")
    parts = {"namespace": "openai", "method": "POST", "path": "/v1/chat/completions",
             "body": "0123abcd"}
    es.put("a" * 64, make_entry(200, [("content-type", "application/json")], COMPLETION_BYTES,
                                1000.0, parts, "openai"), None)
    es.put("b" * 64, make_entry(200, [("content-type", "text/event-stream")], b"".join(CHUNKS),
                                1000.0, {**parts, "body": "4567"}, "openai",
                                events=[(0.0, c) for c in CHUNKS]), None)
    es.close()
    rows = ls_rows(bridge_home, "--cassette", "old")
    assert sorted((r["model"], r["prompt"]) for r in rows) == [
        ("gpt-4o-2024-08-06", None), ("gpt-4o-mini", None)]
    out = bridge(["cache", "ls", "--cassette", "old"], bridge_home).stdout
    assert "gpt-4o-2024-08-06  POST /v1/chat/completions" in out


def test_export_writes_text_bodies_readable_and_replays_them_byte_for_byte(
        start_bridge, upstream, client, tmp_path, monkeypatch):
    llm_upstream(upstream)
    cfg = config_yaml(route_yaml("openai", ("up", upstream.url)))
    rec = start_bridge(cfg, replay=ReplayMode(record=True, cassette="team"))
    online = ask_all(client, rec.url("openai"))
    assert [r.content for r in (online["chat"], online["blob"])] == [COMPLETION_BYTES, BLOB]
    stored(rec.home / "cassettes" / "team", 5)
    rec.stop()

    export = tmp_path / "team.jsonl"
    ex = bridge(["cache", "export", "--cassette", "team", str(export)], rec.home)
    assert ex.returncode == 0, ex.stderr
    text = export.read_text(encoding="utf-8")
    assert KEY not in text
    lines = text.splitlines()[1:]
    entries = [json.loads(line)["entry"] for line in lines]
    completions = [e for e in entries if e.get("body_text") == COMPLETION_BYTES.decode()]
    assert len(completions) == 2  # the JSON bodies as text, not base64
    assert all("body" not in e and json.loads(e["body_text"]) == COMPLETION for e in completions)
    assert any('\\"content\\": \\"¡Hola! Bonjour, Marie.\\"' in line for line in lines)
    [blob] = [e for e in entries if "body" in e]  # binary stays base64
    assert base64.b64decode(blob["body"]) == BLOB
    [stream] = [e for e in entries if "events_text" in e]
    assert "".join(x for _, x in stream["events_text"]) == b"".join(CHUNKS).decode()

    teammate = tmp_path / "teammate"
    im = bridge(["cache", "import", str(export)], teammate)
    assert im.returncode == 0, im.stderr
    monkeypatch.setenv("BRIDGE_HOME", str(teammate))
    before = len(upstream.calls)
    off = start_bridge(cfg, replay=ReplayMode(offline=True, cassette="team"), name="off.yaml")
    replayed = ask_all(client, off.url("openai"))
    for what, got in replayed.items():
        assert got.headers["x-bridge-cache"] == "replay", what
        assert (got.status_code, got.content) == (online[what].status_code,
                                                  online[what].content), what
    assert len(upstream.calls) == before


def test_an_export_with_base64_bodies_still_imports_and_text_is_checked_as_strictly(
        tmp_path, bridge_home):
    es = EntryStore(bridge_home / "cassettes" / "team")
    body = "¡Hola!".encode()
    es.put("c" * 64, make_entry(200, [("content-type", "application/json")], body, 1000.0,
                                {"method": "GET", "path": "/x"}, "api"), None)
    es.close()
    export = tmp_path / "new.jsonl"
    assert bridge(["cache", "export", "--cassette", "team", str(export)], bridge_home).returncode == 0
    header, line = export.read_text(encoding="utf-8").splitlines()
    row = json.loads(line)

    old = dict(row, entry={**{k: v for k, v in row["entry"].items() if k != "body_text"},
                           "body": base64.b64encode(body).decode()})
    for name, entry, problem in [
        ("old", old["entry"], None),
        ("surrogate", {**row["entry"], "body_text": "\ud800"}, "body_text is not valid Unicode"),
        ("both", {**old["entry"], "body_text": "x"}, "both 'body' and 'body_text'"),
        ("about", {**row["entry"], "about": {"model": "m\x1b[2J"}}, "about is not an object"),
    ]:
        f = tmp_path / f"{name}.jsonl"
        f.write_text(header + "\n" + json.dumps({**row, "entry": entry}) + "\n")
        home = tmp_path / name
        r = bridge(["cache", "import", str(f)], home)
        if problem is None:
            assert r.returncode == 0, r.stderr
            es = EntryStore(home / "cassettes" / "team")
            try:
                assert es.get("c" * 64).body == body
            finally:
                es.close()
        else:
            assert r.returncode == 2 and problem in r.stderr, (name, r.stderr)
            assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
            assert not (home / "cassettes").exists()


@pytest.mark.parametrize("body, about", [
    ({"model": "gpt-4o", "input": "Tell me a joke"}, {"model": "gpt-4o", "prompt": "Tell me a joke"}),
    ({"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "Hi\n\n  there"}]},
     {"model": "claude-3-5-haiku", "prompt": "Hi there"}),
    ({"model": "text-embedding-3-small", "input": ["a", "b"]},
     {"model": "text-embedding-3-small", "prompt": "b"}),
    ({"model": "gpt-4o"}, None),  # no messages, input or contents: not an LLM call
])
def test_what_a_request_asked_is_read_from_the_shapes_of_the_apis(body, about):
    from bridge_cli.common.entry import describe_request

    assert describe_request(json.dumps(body).encode()) == about
