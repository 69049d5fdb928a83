"""Fault injection end to end: a real bridge between real upstreams and real clients (httpx,
the official openai SDK, the `bridge` CLI as a subprocess, pytest itself).

Each test asserts on what the client got, what the upstreams received (`.calls`), the
x-bridge-* headers and the FlowEvent, so a fault that silently does nothing fails.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from bridge_cli.config.model import Fault
from bridge_cli.engine.chaos import Chaos
from bridge_cli.engine.clock import ManualClock
from bridge_cli.testing import bridge_fault, fault  # noqa: F401 - bridge_fault is a fixture
from tests.conftest import (
    breaker_moves,
    bridge_cmd,
    cli_env,
    config_yaml,
    control_get,
    counting_sse,
    flow_event,
    json_answer,
    one_route,
    openai_sdk,
    route_yaml,
    start_up,
    stop,
    tries,
)
from tests.conftest import wait_for as _wait_for

# --- helpers -------------------------------------------------------------------------------------


def inject(b, **keys) -> str:
    """Add a fault through the control API; returns its name."""
    keys.setdefault("route", "api")
    return b.control().add_fault(keys)["fault"]["name"]


def active(b) -> dict[str, dict]:
    return {f["name"]: f for f in b.control().faults()["faults"]}


def faulted(r: httpx.Response) -> bool:
    return "x-bridge-fault" in r.headers


def read_all(c: httpx.Client, url: str) -> tuple[httpx.Response, bytes, Exception | None]:
    """Status, every byte that arrived, and the error that ended the body early (if any)."""
    got = bytearray()
    with c.stream("GET", url) as r:
        try:
            for chunk in r.iter_raw():
                got += chunk
        except httpx.HTTPError as e:
            return r, bytes(got), e
    return r, bytes(got), None


def sse_read(c: httpx.Client, url: str) -> tuple[httpx.Response, list[tuple[float, str]],
                                                 Exception | None]:
    """SSE lines with their arrival times, and the error that cut the stream (if any)."""
    lines: list[tuple[float, str]] = []
    with c.stream("GET", url) as r:
        try:
            for line in r.iter_lines():
                lines.append((time.monotonic(), line))
        except httpx.HTTPError as e:
            return r, lines, e
    return r, lines, None


def data_lines(lines) -> list[str]:
    return [line for _, line in lines if line.startswith("data: ") and "{" not in line]


def cli(args: list[str], home: Path, columns: int = 200) -> subprocess.CompletedProcess:
    return bridge_cmd(args, cli_env(home, columns), timeout=30)


def cli_parallel(*runs: tuple) -> list[subprocess.CompletedProcess]:
    """Several `bridge` commands at once (each is a fresh interpreter: keep the suite fast)."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda run: cli(*run), runs))


# --- request side: latency, status, presets, reset, hang --------------------------------------------


def test_latency_with_jitter_delays_every_request_within_bounds(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url), chaos="""
        seed: 11
        faults:
          - {name: slow, route: api, latency: 200ms, jitter: 100ms}
    """))
    url = b.url("api") + "/v1/x"
    elapsed = []
    for _ in range(5):
        t0 = time.monotonic()
        r = client.get(url)
        elapsed.append(time.monotonic() - t0)
        assert r.status_code == 200
        assert r.json()["path"] == "/v1/x"  # the upstream still answers, later
        assert r.headers["x-bridge-fault"] == "slow"
        # the injected wait stands in for a slow upstream: it is not bridge's own overhead
        assert float(r.headers["x-bridge-overhead-ms"]) < 50
    assert len(upstream.calls) == 5
    assert all(0.095 <= e <= 0.35 for e in elapsed), elapsed  # 200 ms ± 100 ms
    assert max(elapsed) - min(elapsed) >= 0.02, elapsed  # jitter varies the delay


def test_latency_adds_the_configured_delay_within_10ms_at_p50(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    url = b.url("api") + "/v1/x"

    def p50() -> float:
        times = []
        for _ in range(11):
            t0 = time.monotonic()
            assert client.get(url).status_code == 200
            times.append(time.monotonic() - t0)
        return statistics.median(times)

    base = p50()
    inject(b, name="lat", latency="100ms")
    added = p50() - base
    assert abs(added - 0.100) <= 0.010, added


def test_status_fault_answers_with_its_headers_and_body_without_calling_the_upstream(
        start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="teapot", status=418, headers={"x-test": "yes", "retry-after": "9"},
           body={"custom": True})
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 418
    assert r.headers["x-test"] == "yes" and r.headers["retry-after"] == "9"
    assert r.json() == {"custom": True}
    assert r.headers["x-bridge-fault"] == "teapot"
    assert upstream.calls == []


def test_a_bare_status_fault_answers_json_naming_the_fault(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="down", status=503)
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["type"] == "injected_fault"
    assert "down" in r.json()["error"]["message"]
    assert upstream.calls == []


PRESET_CASES = {
    "openai-429": (429, ["retry-after", "x-ratelimit-limit-requests",
                         "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                         "x-ratelimit-remaining-tokens"]),
    "openai-500": (500, ["x-request-id"]),
    "anthropic-429": (429, ["retry-after", "anthropic-ratelimit-requests-limit",
                            "anthropic-ratelimit-requests-remaining", "request-id"]),
    "anthropic-529-overloaded": (529, ["request-id"]),
    "github-403-rate-limit": (403, ["x-ratelimit-limit", "x-ratelimit-remaining",
                                    "x-ratelimit-reset", "x-ratelimit-resource"]),
}


@pytest.mark.parametrize("preset", list(PRESET_CASES))
def test_each_preset_answers_like_the_provider(start_bridge, upstream, client, preset):
    status, headers = PRESET_CASES[preset]
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="p", preset=preset)
    r = client.post(b.url("api") + "/v1/anything", json={"model": "m"})
    assert r.status_code == status
    for h in headers:
        assert h in r.headers, h
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    if preset.startswith("openai"):
        assert set(body["error"]) == {"message", "type", "param", "code"}
        if preset == "openai-429":
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
        else:
            assert body["error"]["type"] == "server_error"
    elif preset.startswith("anthropic"):
        assert body["type"] == "error"
        assert body["error"]["type"] == ("rate_limit_error" if status == 429
                                         else "overloaded_error")
    else:
        assert "API rate limit exceeded" in body["message"]
        assert body["documentation_url"].startswith("https://docs.github.com/")
        assert r.headers["x-ratelimit-remaining"] == "0"
    assert upstream.calls == []


@pytest.mark.parametrize(("preset", "error"), [("openai-429", openai.RateLimitError),
                                               ("openai-500", openai.InternalServerError)])
def test_the_openai_sdk_raises_its_own_error_for_an_openai_preset(
        start_bridge, upstream, preset, error):
    upstream.on("/v1/chat/completions", json_answer({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}]}))
    b = start_bridge(one_route(("primary", upstream.url)))
    sdk = openai_sdk(b)
    messages = [{"role": "user", "content": "hello"}]
    with sdk:
        answer = sdk.chat.completions.create(model="gpt-4o", messages=messages)
        assert answer.choices[0].message.content == "hi"
        with fault("api", preset=preset) as f:
            with pytest.raises(error) as e:
                sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert e.value.status_code == int(preset[-3:])
    assert e.value.response.headers["x-bridge-fault"] == f.name
    assert f.hits == 1
    assert len(upstream.calls) == 1  # only the clean call reached the upstream


def test_reset_drops_the_connection_without_a_response(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="rst", reset=True)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(b.url("api") + "/v1/x")
    assert upstream.calls == []
    _wait_for(lambda: any(e.kind == "flow" for e in b.events()))
    ev = next(e for e in b.events() if e.kind == "flow")
    assert ev.status is None and ev.faults == ("rst",)
    assert active(b)["rst"]["hits"] == 1


def test_hang_with_a_duration_is_ended_by_the_routes_timeout(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url),
                               extra="timeout: {connect: 1s, total: 300ms}"))
    inject(b, name="stuck", hang="5s")
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    elapsed = time.monotonic() - t0
    assert 0.28 <= elapsed < 1.5
    assert r.status_code == 504
    assert r.headers["x-bridge-error"] == "upstream_timeout"
    assert r.json()["error"]["type"] == "upstream_timeout"
    assert r.headers["x-bridge-fault"] == "stuck"
    assert upstream.calls == []
    assert tries(flow_event(b, r), fault=True) == [("primary", "timeout", "stuck")]


def test_hang_until_the_client_gives_up(start_bridge, upstream):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="forever", hang=True)
    t0 = time.monotonic()
    with httpx.Client(trust_env=False, timeout=0.5) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get(b.url("api") + "/v1/x")
    assert 0.45 <= time.monotonic() - t0 < 1.5
    # bridge notices the client left, stops hanging and records the flow
    _wait_for(lambda: any(e.kind == "flow" for e in b.events()), timeout=3)
    ev = next(e for e in b.events() if e.kind == "flow")
    assert ev.faults == ("forever",)
    assert upstream.calls == []


# --- response side: throttle, slow first byte, truncate, corrupt, SSE ----------------------------------

BIG = json.dumps({"data": "x" * 20_460}).encode()  # 20 KiB of JSON


def test_throttle_sends_a_20kb_body_at_10kb_per_second(start_bridge, upstream, client):
    async def big(request):
        return web.Response(body=BIG, content_type="application/json")

    upstream.on("/big", big)
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="slowpipe", throttle="10KB/s")
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/big")
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    assert r.content == BIG  # all of it, just slowly
    assert 1.5 <= elapsed < 4.0, elapsed
    assert r.headers["x-bridge-fault"] == "slowpipe"


def test_slow_first_byte_delays_the_response(start_bridge, upstream, client):
    upstream.on("/v1/x", json_answer({"ok": True}))
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="sfb", slow_first_byte="500ms")
    t0 = time.monotonic()
    with client.stream("GET", b.url("api") + "/v1/x") as r:
        first = time.monotonic() - t0
        body = r.read()
    assert 0.45 <= first < 1.5, first
    assert json.loads(body) == {"ok": True}
    assert len(upstream.calls) == 1


def test_slow_first_byte_is_not_reported_as_bridge_overhead(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="sfb", slow_first_byte="500ms")
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert float(r.headers["x-bridge-overhead-ms"]) < 50


@pytest.mark.parametrize(("truncate", "keep"), [(100, 100), ("50%", 500)])
def test_truncate_cuts_the_body_short_and_closes(start_bridge, upstream, client, truncate,
                                                 keep):
    full = json.dumps({"data": "y" * 988}).encode()
    assert len(full) == 1000

    async def body(request):
        return web.Response(body=full, content_type="application/json")

    upstream.on("/v1/x", body)
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="cut", truncate=truncate)
    r, got, error = read_all(client, b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert got == full[:keep]  # the first bytes, then nothing
    assert error is not None  # the client sees a broken transfer, not a clean end


def test_corrupt_makes_the_body_malformed_json_of_the_same_content_type(
        start_bridge, upstream, client):
    payload = {"id": "chatcmpl-1", "choices": [{"message": {"content": "hello"}}]}
    upstream.on("/v1/x", json_answer(payload, content_type="application/vnd.api+json"))
    b = start_bridge(one_route(("primary", upstream.url)))
    clean = client.get(b.url("api") + "/v1/x")
    assert clean.json() == payload
    inject(b, name="garble", corrupt=True)
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.headers["content-type"] == clean.headers["content-type"]
    with pytest.raises(ValueError):
        json.loads(r.content)
    assert r.headers["x-bridge-fault"] == "garble"


def test_sse_cut_after_at_the_upstream_stage_ends_with_an_in_band_error(
        start_bridge, upstream, client):
    upstream.on("/sse", counting_sse(6))
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="cut3", sse_cut_after=3)
    r, lines, error = sse_read(client, b.url("api") + "/sse")
    assert r.status_code == 200
    assert data_lines(lines) == ["data: 0", "data: 1", "data: 2"]
    texts = [line for _, line in lines]
    assert "event: error" in texts  # not a clean end
    err = next(line for line in texts if line.startswith("data: {"))
    assert json.loads(err.removeprefix("data: "))["error"]["type"] == "upstream_reset"
    ev = flow_event(b, r)
    assert ev.streamed and ev.error and ev.faults == ("cut3",)


def test_sse_cut_after_at_the_client_stage_just_cuts_the_connection(
        start_bridge, upstream, client):
    upstream.on("/sse", counting_sse(6))
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="cut3", sse_cut_after=3, stage="client")
    r, lines, error = sse_read(client, b.url("api") + "/sse")
    assert r.status_code == 200
    assert data_lines(lines) == ["data: 0", "data: 1", "data: 2"]
    assert "event: error" not in [line for _, line in lines]
    assert isinstance(error, httpx.RemoteProtocolError)  # an abnormal end


def openai_stream(words: list[str]):
    """An upstream streaming a chat completion the way OpenAI does, one word a chunk."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for w in words:
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                     "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": w},
                                                     "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize(("stage", "error"), [("upstream", openai.APIError),
                                              ("client", openai.APIConnectionError)])
def test_a_cut_stream_surfaces_in_the_openai_sdk_after_the_words_sent(
        start_bridge, upstream, stage, error):
    upstream.on("/v1/chat/completions", openai_stream(["The ", "answer ", "is ", "42."]))
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="midway", sse_cut_after=2, stage=stage)
    sdk = openai_sdk(b)
    words = []
    with sdk, pytest.raises(openai.APIError) as e:
        for chunk in sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "?"}], stream=True):
            words.append(chunk.choices[0].delta.content)
    assert type(e.value) is error  # in-band error event vs a dropped connection
    assert words == ["The ", "answer "]


def test_sse_delay_spaces_the_events(start_bridge, upstream, client):
    upstream.on("/sse", counting_sse(4))
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="drip", sse_delay="200ms")
    r, lines, error = sse_read(client, b.url("api") + "/sse")
    assert error is None
    events = [(t, line) for t, line in lines if line.startswith("data: ")]
    assert [line for _, line in events] == [f"data: {i}" for i in range(4)]
    gaps = [b2[0] - a[0] for a, b2 in zip(events, events[1:], strict=False)]
    assert all(g >= 0.18 for g in gaps), gaps


# --- targeting ---------------------------------------------------------------------------------


def test_a_route_fault_hits_its_route_only_and_star_hits_every_route(
        start_bridge, upstream, client):
    b = start_bridge(config_yaml(route_yaml("api", ("primary", upstream.url)),
                            route_yaml("other", ("primary", upstream.url))))
    name = inject(b, name="api-only", status=503)
    assert client.get(b.url("api") + "/x").status_code == 503
    assert client.get(b.url("other") + "/x").status_code == 200
    b.control().remove_fault(name)
    inject(b, name="everywhere", route="*", status=502)
    assert client.get(b.url("api") + "/x").status_code == 502
    assert client.get(b.url("other") + "/x").status_code == 502


def test_an_upstream_fault_on_the_primary_makes_the_backup_answer(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url)))
    inject(b, name="kill-primary", upstream="primary", status=503)
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.headers["x-bridge-upstream"] == "backup"
    assert r.headers["x-bridge-attempts"] == "2"
    assert r.headers["x-bridge-fault"] == "kill-primary"
    assert primary.calls == [] and len(backup.calls) == 1
    assert tries(flow_event(b, r), fault=True) == [("primary", "503", "kill-primary"),
                                       ("backup", "ok", None)]


def test_match_method_path_glob_and_header(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="picky", status=503,
           match={"method": "POST", "path": "/v1/chat/**", "header": {"x-test": "chaos"}})
    url = b.url("api")
    hdr = {"x-test": "chaos"}
    assert client.post(url + "/v1/chat/completions", headers=hdr).status_code == 503
    assert client.get(url + "/v1/chat/completions", headers=hdr).status_code == 200
    assert client.post(url + "/v1/embeddings", headers=hdr).status_code == 200
    assert client.post(url + "/v1/chat/completions", headers={"x-test": "calm"}).status_code == 200
    assert client.post(url + "/v1/chat/completions").status_code == 200
    assert active(b)["picky"]["hits"] == 1


def test_count_removes_the_fault_after_n_hits(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="twice", status=503, count=2)
    codes = [client.get(b.url("api") + "/x").status_code for _ in range(5)]
    assert codes == [503, 503, 200, 200, 200]
    assert "twice" not in active(b)


def test_for_expires_the_fault(start_bridge, upstream, client):
    clock = ManualClock()
    b = start_bridge(one_route(("primary", upstream.url)), clock=clock)
    inject(b, name="brief", status=503, **{"for": "400ms"})
    assert active(b)["brief"]["remaining_s"] == 0.4
    assert client.get(b.url("api") + "/x").status_code == 503
    clock.advance(0.3)
    assert active(b)["brief"]["remaining_s"] == pytest.approx(0.1)
    assert client.get(b.url("api") + "/x").status_code == 503
    clock.advance(0.2)
    assert client.get(b.url("api") + "/x").status_code == 200
    assert "brief" not in active(b)


@pytest.mark.parametrize(("keys", "expected"), [({"every": 3}, {2, 5, 8}),
                                                ({"first": 2}, {0, 1})])
def test_every_and_first(start_bridge, upstream, client, keys, expected):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="pattern", status=503, **keys)
    hit = {i for i in range(9) if client.get(b.url("api") + "/x").status_code == 503}
    assert hit == expected
    assert len(upstream.calls) == 9 - len(expected)


def test_zero_percent_never_fires(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="off", status=503, probability="0%")
    rs = [client.get(b.url("api") + "/x") for _ in range(200)]
    assert all(r.status_code == 200 and not faulted(r) for r in rs)
    assert len(upstream.calls) == 200
    f = active(b)["off"]
    assert f["hits"] == 0 and f["matched"] == 200


def test_decisions_are_per_request_not_per_connection(start_bridge, upstream):
    b = start_bridge(one_route(("primary", upstream.url), chaos="seed: 5"))
    inject(b, name="coin", status=503, probability="50%")
    ports, codes = set(), []
    with httpx.Client(trust_env=False, timeout=10) as keepalive:
        for _ in range(40):
            r = keepalive.get(b.url("api") + "/x")
            codes.append(r.status_code)
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(ports) == 1  # one connection throughout
    assert 5 <= codes.count(503) <= 35 and 5 <= codes.count(200) <= 35, codes


# --- reproducibility ---------------------------------------------------------------------------


def _faulted_indexes(start_bridge, upstream, client, seed: int, n: int = 60) -> set[int]:
    b = start_bridge(one_route(("primary", upstream.url), chaos=f"""
        seed: {seed}
        faults:
          - {{name: flaky, route: api, status: 503, probability: 30%}}
    """), name=f"seed-{seed}-{time.monotonic_ns()}.yaml")
    out = {i for i in range(n) if faulted(client.get(b.url("api") + "/x"))}
    b.stop()
    return out


def test_the_same_seed_faults_the_same_requests_across_two_bridges(
        start_bridge, upstream, client):
    first = _faulted_indexes(start_bridge, upstream, client, 42)
    second = _faulted_indexes(start_bridge, upstream, client, 42)
    other = _faulted_indexes(start_bridge, upstream, client, 43)
    assert first == second
    assert first != other
    assert 5 <= len(first) <= 35
    # ... and it is exactly what the engine derives from (seed, name, index)
    engine = Chaos(42, lambda: 0.0)
    engine.add(Fault(name="flaky", route="api", probability=0.3, actions={"status": 503}))
    assert first == {i for i in range(60)
                     if engine.decide("upstream", "api", "primary", "GET", "/x", {})}


def _start_up(args: list[str], home: Path, cwd: Path) -> tuple[subprocess.Popen, dict]:
    return start_up(["-q", *args], cwd, cli_env(home))


def test_bridge_up_prints_its_seed_and_starts_the_config_faults(tmp_path, upstream):
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(one_route(("primary", upstream.url), chaos="""
        seed: 42
        faults:
          - {name: from-config, route: api, status: 503, match: {path: /broken}}
    """))
    ports = ["--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0"]
    # two bridges at once (separate homes): the config's seed, and --seed overriding it
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda run: _start_up(*run), [
            (["-c", str(cfg), *ports], tmp_path / "home1", tmp_path),
            (["-c", str(cfg), *ports, "--seed", "7"], tmp_path / "home2", tmp_path)]))
    (proc, control), (proc7, control7) = started
    try:
        faults = control_get(control, "faults")
        assert faults["seed"] == 42
        assert [(f["name"], f["source"]) for f in faults["faults"]] == [("from-config", "config")]
        assert control_get(control7, "faults")["seed"] == 7
        status = control_get(control, "status")
        addr = next(lst["address"] for lst in status["listeners"] if lst["kind"] == "reverse")
        with httpx.Client(trust_env=False, timeout=10) as c:
            assert c.get(f"http://{addr}/broken").status_code == 503
            assert c.get(f"http://{addr}/fine").status_code == 200
    finally:
        out, _ = stop(proc)
        out7, _ = stop(proc7)
    assert "chaos seed 42" in out, out
    assert "1 fault(s) from the config" in out
    assert "chaos seed 7" in out7 and "chaos seed 42" not in out7, out7


def test_without_a_seed_bridge_picks_one_and_reports_it(start_bridge, upstream):
    b = start_bridge(one_route(("primary", upstream.url)))
    seed = b.bridge.seed
    assert isinstance(seed, int)
    assert b.control().faults()["seed"] == seed


# --- retries and breakers see faults like real failures ------------------------------------------------


def test_a_faulted_primary_opens_its_breaker_and_traffic_falls_back(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    b = start_bridge(config_yaml(route_yaml(
        "api", ("primary", primary.url), ("backup", backup.url),
        extra="breaker: {failure_rate: 50%, window: 4, min_calls: 4, open_for: 30s}")))
    inject(b, name="primary-503", upstream="primary", status=503)
    for _ in range(4):
        r = client.get(b.url("api") + "/v1/x")
        assert r.status_code == 200 and r.headers["x-bridge-upstream"] == "backup"
    _wait_for(lambda: breaker_moves(b, "primary") == [("closed", "open")])
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert tries(flow_event(b, r), fault=True) == [("primary", "breaker_open", None),
                                                   ("backup", "ok", None)]
    assert primary.calls == [] and len(backup.calls) == 5
    assert active(b)["primary-503"]["hits"] == 4  # the open breaker skips the faulted try


def test_a_status_fault_is_retried_per_retry_and_never_reaches_the_upstream(
        start_bridge, upstream, client):
    b = start_bridge(one_route(
        ("primary", upstream.url),
        extra="retry: {attempts: 3, backoff: {initial: 10ms, jitter: none}}"))
    inject(b, name="twice", status=503, first=2)
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 200
    assert r.headers["x-bridge-attempts"] == "3"
    assert len(upstream.calls) == 1  # the faulted tries never called it
    assert tries(flow_event(b, r), fault=True) == [
        ("primary", "503", "twice"), ("primary", "503", "twice"), ("primary", "ok", None)]

    inject(b, name="always", status=503)
    r = client.get(b.url("api") + "/v1/x")
    assert r.status_code == 503
    assert r.headers["x-bridge-attempts"] == "3"
    assert r.headers["x-bridge-fault"] == "always"
    assert len(upstream.calls) == 1


def test_a_post_hit_by_a_request_side_fault_moves_on_because_it_never_left(
        start_bridge, upstream_factory, client):
    primary, backup = upstream_factory(), upstream_factory()
    b = start_bridge(one_route(("primary", primary.url), ("backup", backup.url)))
    inject(b, name="p503", upstream="primary", status=503)
    r = client.post(b.url("api") + "/v1/x", content=b"pay once")
    assert r.status_code == 200 and r.headers["x-bridge-upstream"] == "backup"
    assert primary.calls == [] and backup.calls[0].body == b"pay once"


def test_a_client_stage_429_replaces_the_final_answer_after_retries(
        start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url),
                               extra="retry: {attempts: 3, backoff: {initial: 10ms}}"))
    inject(b, name="late-429", status=429, stage="client", headers={"retry-after": "1"})
    t0 = time.monotonic()
    r = client.get(b.url("api") + "/v1/x")
    assert time.monotonic() - t0 < 0.5  # the route didn't wait out the Retry-After
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-bridge-fault"] == "late-429"
    assert r.headers["x-bridge-attempts"] == "1"
    assert len(upstream.calls) == 1
    ev = flow_event(b, r)
    assert tries(ev, fault=True) == [("primary", "ok", None)]
    assert ev.faults == ("late-429",) and ev.status == 429


# --- what a faulted response says ----------------------------------------------------------------


def test_the_response_header_and_the_flow_event_name_the_fault(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject(b, name="visible", status=502)
    r = client.get(b.url("api") + "/v1/x")
    assert r.headers["x-bridge-fault"] == "visible"
    ev = flow_event(b, r)
    assert ev.faults == ("visible",)
    assert ev.status == 502
    assert ev.tries[0].fault == "visible"
    assert client.get(b.url("api") + "/another/path").status_code == 502  # every request
    b.control().remove_fault("visible")
    r = client.get(b.url("api") + "/v1/x")
    assert "x-bridge-fault" not in r.headers
    assert flow_event(b, r).faults == ()


def test_a_faulted_answer_is_never_cached_and_a_header_fault_skips_the_cache(start_bridge, upstream, client):
    payload = {"answer": 42}
    upstream.on("/v1/x", json_answer(payload))
    b = start_bridge(one_route(("primary", upstream.url), extra="cache: {ttl: 1m}",
                               chaos="allow_headers: true"))
    url = b.url("api") + "/v1/x"
    inject(b, name="garble-once", corrupt=True, first=1)
    r = client.get(url)
    assert r.headers["x-bridge-fault"] == "garble-once"
    with pytest.raises(ValueError):
        json.loads(r.content)
    r = client.get(url)  # the corrupted body was not kept: a clean call, now cached
    assert r.json() == payload and r.headers.get("x-bridge-cache") != "hit"
    r = client.get(url)
    assert r.json() == payload and r.headers.get("x-bridge-cache") == "hit"
    assert len(upstream.calls) == 2
    # a header fault is never answered from the cache
    r = client.get(url, headers={"x-bridge-fault": "status=503"})
    assert r.status_code == 503 and r.headers.get("x-bridge-cache") != "hit"


# --- per-request faults from a header --------------------------------------------------------------


def test_an_allowed_fault_header_faults_only_that_request(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url), chaos="allow_headers: true"))
    url = b.url("api") + "/v1/x"
    t0 = time.monotonic()
    r = client.get(url, headers={"x-bridge-fault": "status=503; latency=300ms"})
    assert time.monotonic() - t0 >= 0.29
    assert r.status_code == 503
    assert r.headers["x-bridge-fault"] == "x-bridge-fault"  # a header fault's name
    assert r.json()["error"]["type"] == "injected_fault"
    assert upstream.calls == []
    t0 = time.monotonic()
    r = client.get(url, headers={"x-bridge-fault": "latency=300ms"})
    assert time.monotonic() - t0 >= 0.29
    assert r.status_code == 200
    assert "x-bridge-fault" not in {k.lower() for k in upstream.calls[-1].headers}
    r = client.get(url)  # no header, no fault
    assert r.status_code == 200 and not faulted(r)
    assert b.control().faults()["faults"] == []  # nothing lingers


def test_a_fault_header_is_dropped_and_ignored_unless_allowed(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    r = client.get(b.url("api") + "/v1/x", headers={"x-bridge-fault": "status=503"})
    assert r.status_code == 200 and not faulted(r)
    assert len(upstream.calls) == 1
    assert "x-bridge-fault" not in {k.lower() for k in upstream.calls[0].headers}


def test_a_bad_fault_header_gets_a_400_json_error(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url), chaos="allow_headers: true"))
    r = client.get(b.url("api") + "/v1/x", headers={"x-bridge-fault": "status=lots"})
    assert r.status_code == 400
    assert r.headers["x-bridge-error"] == "bad_fault_header"
    err = r.json()["error"]
    assert err["type"] == "bad_fault_header" and "status" in err["message"]
    assert upstream.calls == []


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_inject_list_and_clear(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url), chaos="seed: 3"))
    r = cli(["chaos", "inject", "--route", "api", "--status", "503", "--probability", "30%",
             "--for", "5m"], b.home)
    assert r.returncode == 0, r.stderr
    assert "injected api-503-1" in r.stdout
    assert "503" in r.stdout and "route api" in r.stdout and "30%" in r.stdout
    assert "bridge chaos clear api-503-1" in r.stderr

    n_faulted = sum(faulted(client.get(b.url("api") + "/x")) for _ in range(40))
    assert 0 < n_faulted < 40

    listed, as_json = cli_parallel((["chaos", "list"], b.home),
                                   (["chaos", "list", "--json"], b.home))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "api-503-1" in line)
    assert f" {n_faulted} " in row  # hits
    assert re.search(r" (29\d|300)s", row), row  # time left of the 5m
    doc = json.loads(as_json.stdout)
    (f,) = doc["faults"]
    assert f["name"] == "api-503-1" and f["hits"] == n_faulted and f["matched"] == 40
    assert 290 < f["remaining_s"] <= 300
    assert doc == {**b.control().faults(), "faults": doc["faults"]}

    inject(b, name="lag", latency="1s")
    r = cli(["chaos", "clear", "api-503-1"], b.home)
    assert r.returncode == 0 and "api-503-1" in r.stdout
    assert set(active(b)) == {"lag"}
    r = cli(["chaos", "clear"], b.home)
    assert r.returncode == 0 and "lag" in r.stdout
    assert active(b) == {}


def test_cli_bad_input_is_one_line_on_stderr_and_exit_2(start_bridge, upstream, tmp_path):
    b = start_bridge(one_route(("primary", upstream.url)))
    inject_ = ["chaos", "inject"]
    cases = {
        "probability": (inject_ + ["--route", "api", "--status", "503", "--probability", "140%"],
                        b.home, 80),
        "preset": (inject_ + ["--route", "api", "--preset", "openai-999"], b.home, 80),
        "nope": (inject_ + ["--route", "nope", "--status", "503"], b.home, 80),
        "no bridge is running": (["chaos", "list"], tmp_path / "empty-home", 80),
    }  # an 80-column terminal: the one line must not be wrapped
    for words, r in zip(cases, cli_parallel(*cases.values()), strict=True):
        assert r.returncode == 2, (words, r.stdout, r.stderr)
        assert r.stderr.strip().count("\n") == 0, r.stderr
        assert r.stderr.startswith("error:") and words in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
    assert "bridge up" in r.stderr  # the no-bridge line says how to start one
    assert active(b) == {}


# --- the Python API and the pytest fixture -----------------------------------------------------------


def test_fault_context_manager_faults_inside_and_removes_on_exit(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    url = b.url("api") + "/x"
    with fault("api", status=503) as f:
        assert [client.get(url).status_code for _ in range(3)] == [503] * 3
        assert f.hits == 3
        assert f.name in active(b)
    assert active(b) == {}
    assert f.hits == 3  # still readable after removal
    assert client.get(url).status_code == 200


def test_fault_context_manager_removes_the_fault_when_the_block_raises(
        start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    with pytest.raises(RuntimeError, match="app broke"):
        with fault("api", preset="openai-429", for_="5m"):
            assert client.get(b.url("api") + "/x").status_code == 429
            raise RuntimeError("app broke")
    assert active(b) == {}
    assert client.get(b.url("api") + "/x").status_code == 200


def test_the_bridge_fault_fixture_injects(start_bridge, upstream, client, bridge_fault):  # noqa: F811
    b = start_bridge(one_route(("primary", upstream.url)))
    f = bridge_fault("api", status=500, match={"path": "/x"})
    assert client.get(b.url("api") + "/x").status_code == 500
    assert client.get(b.url("api") + "/y").status_code == 200
    assert f.hits == 1
    assert active(b)[f.name]["source"] == "api"


def test_hits_of_a_fault_that_removed_itself_after_count_are_kept(start_bridge, upstream, client):
    b = start_bridge(one_route(("primary", upstream.url)))
    with fault("api", status=500, count=2) as f:
        codes = [client.get(b.url("api") + "/x").status_code for _ in range(3)]
        assert codes == [500, 500, 200]
        assert f.hits == 2


INNER_TESTS = '''
import os
import httpx
from bridge_cli.testing import bridge_fault  # noqa: F401

URL = os.environ["CHAOS_URL"]


def test_passes(bridge_fault):
    bridge_fault("api", status=503, name="from-passing-test")
    assert httpx.get(URL, trust_env=False).status_code == 503


def test_fails(bridge_fault):
    bridge_fault("api", status=502, name="from-failing-test")
    assert httpx.get(URL, trust_env=False).status_code == 502
    raise AssertionError("this test fails on purpose")
'''


def test_the_bridge_fault_fixture_removes_its_faults_after_a_test_pass_or_fail(
        start_bridge, upstream, client, tmp_path):
    b = start_bridge(one_route(("primary", upstream.url)))
    (tmp_path / "inner").mkdir()
    test_file = tmp_path / "inner" / "test_inner.py"
    test_file.write_text(INNER_TESTS)
    env = cli_env(b.home) | {"CHAOS_URL": b.url("api") + "/x",
                             "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # a bare pytest: fast
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path / "inner"), str(test_file)],
                       env=env, capture_output=True, text=True, timeout=60,
                       cwd=tmp_path / "inner")
    assert "1 failed, 1 passed" in r.stdout, r.stdout + r.stderr
    assert "this test fails on purpose" in r.stdout
    assert active(b) == {}
    assert len(upstream.calls) == 0
    assert client.get(b.url("api") + "/x").status_code == 200


# --- config faults and reload ---------------------------------------------------------------------


def test_a_reload_follows_the_config_faults_and_keeps_injected_ones(
        start_bridge, upstream, client):
    chaos = """
        faults:
          - {name: cfg-503, route: api, status: 503, match: {path: /a}}
    """
    b = start_bridge(one_route(("primary", upstream.url), chaos=chaos))
    assert active(b)["cfg-503"]["source"] == "config"
    assert client.get(b.url("api") + "/a").status_code == 503
    inject(b, name="api-502", status=502, match={"path": "/b"})
    assert client.get(b.url("api") + "/b").status_code == 502

    b.config_path.write_text(one_route(("primary", upstream.url)))  # the config fault is gone
    result = b.reload()
    assert result.applied, result.message
    assert set(active(b)) == {"api-502"}
    assert client.get(b.url("api") + "/a").status_code == 200
    assert client.get(b.url("api") + "/b").status_code == 502

    b.config_path.write_text(one_route(("primary", upstream.url), chaos="""
        faults:
          - {name: cfg-504, route: api, status: 504, match: {path: /a}}
    """))
    assert b.reload().applied
    assert set(active(b)) == {"api-502", "cfg-504"}
    assert client.get(b.url("api") + "/a").status_code == 504

