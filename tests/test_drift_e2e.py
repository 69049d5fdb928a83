"""Schema drift end to end: a real bridge between httpx (or the openai SDK) and a local
upstream whose answers change shape between requests. Each class of change is reported
once (then counted), an optional field is no false alarm, IDs in paths share one
endpoint, streams are checked per event type, request bodies with `requests: true`,
supplied schemas (builtin:openai-chat) too, and `action: block` answers 502."""

from __future__ import annotations

import json

import httpx
import pytest
from aiohttp import web

from bridge_cli.engine.events import DriftEvent, FlowEvent
from tests.conftest import config_yaml, route_yaml, wait_for

LEARN = 6  # answers of the usual shape before the change


def item(n: int, **over) -> dict:
    doc = {"id": n, "name": f"item {n}", "price": 10 * n, "tags": ["a", "b"],
           "owner": {"id": n, "email": f"u{n}@example.com"}}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not ...}


def drifts(b) -> list[DriftEvent]:
    return [e for e in b.events() if isinstance(e, DriftEvent)]


def flows(b) -> list[FlowEvent]:
    return [e for e in b.events() if isinstance(e, FlowEvent)]


@pytest.fixture
def shapes(upstream):
    state = {"over": {}}

    async def handler(request: web.Request) -> web.Response:
        n = int(request.path.rsplit("/", 1)[-1])
        return web.json_response(item(n, **state["over"]))

    for n in range(1, 40):
        upstream.on(f"/items/{n}", handler)
    return state


def start(start_bridge, upstream, drift: str = "{learn: true}"):
    return start_bridge(config_yaml(route_yaml("api", ("api-up", upstream.url),
                                               extra=f"drift: {drift}")))


def get(b, n: int) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as http:
        return http.get(b.url("api") + f"/items/{n}")


def learn(b, count: int = LEARN) -> None:
    for n in range(1, count + 1):
        assert get(b, n).status_code == 200
    assert drifts(b) == []  # the usual shape raises nothing


@pytest.mark.parametrize("over,kind,severity,path", [
    ({"price": "10.00"}, "type_changed", "breaking", "$.price"),
    ({"name": ...}, "field_missing", "breaking", "$.name"),
    ({"tags": [1, 2]}, "item_type_changed", "breaking", "$.tags"),
    ({"currency": "EUR"}, "field_added", "additive", "$.currency"),
    ({"owner": None}, "became_nullable", "loosening", "$.owner"),
])
def test_each_class_of_change_is_reported_once_then_counted(over, kind, severity, path,
                                                           start_bridge, upstream, shapes):
    b = start(start_bridge, upstream)
    learn(b)
    shapes["over"] = over
    first = get(b, 20)
    assert first.status_code == 200  # warn: the app still gets the answer
    (event,) = wait_for(lambda: drifts(b), what="a drift event")
    assert (event.change, event.severity, event.endpoint) == (kind, severity, "GET /items/{id}")
    assert event.path.startswith(path)
    assert wait_for(lambda: [f for f in flows(b) if f.drift], what="the flow's drift")
    get(b, 21)
    get(b, 22)
    assert len(drifts(b)) == 1  # raised once, no flapping


def test_a_field_absent_in_some_answers_from_the_start_is_optional(start_bridge, upstream,
                                                                  shapes):
    b = start(start_bridge, upstream)
    for n in range(1, LEARN * 2):
        shapes["over"] = {"discount": 5} if n % 2 else {}
        get(b, n)
    shapes["over"] = {}
    for n in range(20, 26):
        get(b, n)
    assert drifts(b) == []


def test_block_answers_a_breaking_change_with_502_and_passes_an_additive_one(
        start_bridge, upstream, shapes):
    b = start(start_bridge, upstream, "{learn: true, action: block}")
    learn(b)
    shapes["over"] = {"currency": "EUR"}
    assert get(b, 20).status_code == 200  # additive: passes
    shapes["over"] = {"price": "10.00"}
    r = get(b, 21)
    assert r.status_code == 502 and r.headers["x-bridge-error"] == "schema_drift"
    err = r.json()["error"]
    assert err["type"] == "schema_drift" and "$.price" in err["message"]
    assert err["finding"]["kind"] == "type_changed"


def test_a_supplied_schema_checks_answers_builtin_openai_chat(start_bridge, upstream):
    good = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}]}
    answers = [good, {**good, "choices": "none"}]

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(answers[0] if len(upstream.calls) <= 1 else answers[1])

    upstream.on("/v1/chat/completions", handler)
    b = start(start_bridge, upstream, "{schema: 'builtin:openai-chat'}")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(trust_env=False, timeout=10) as http:
        http.post(b.url("api") + "/v1/chat/completions", json=body)
        assert drifts(b) == []
        http.post(b.url("api") + "/v1/chat/completions", json=body)
    (event,) = wait_for(lambda: drifts(b), what="a schema violation")
    assert event.change == "schema_violation" and event.severity == "breaking"
    assert event.path.startswith("$.choices")


def test_request_bodies_are_learned_with_requests_true(start_bridge, upstream):
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    upstream.on("/v1/orders", handler)
    b = start(start_bridge, upstream, "{learn: true, requests: true}")
    with httpx.Client(trust_env=False, timeout=10) as http:
        for n in range(LEARN):
            http.post(b.url("api") + "/v1/orders", json={"sku": f"s{n}", "qty": n + 1})
        assert drifts(b) == []
        http.post(b.url("api") + "/v1/orders", json={"sku": "s9", "qty": "3"})
    (event,) = wait_for(lambda: drifts(b), what="a request drift")
    assert event.endpoint == "POST /v1/orders request" and event.path == "$.qty"


def test_streamed_events_are_checked_per_event_type(start_bridge, upstream):
    def sse(delta) -> bytes:
        chunk = {"id": "c", "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta}]}
        return (f"data: {json.dumps(chunk)}\n\n" + "data: [DONE]\n\n").encode()

    answers = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        answers["n"] += 1
        delta = {"content": "hi"} if answers["n"] <= LEARN else {"content": 7}
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(delta))
        await resp.write_eof()
        return resp

    upstream.on("/v1/chat/completions", handler)
    b = start(start_bridge, upstream)
    with httpx.Client(trust_env=False, timeout=10) as http:
        for _ in range(LEARN + 1):
            with http.stream("POST", b.url("api") + "/v1/chat/completions", json={}) as r:
                r.read()
    (event,) = wait_for(lambda: drifts(b), what="a stream drift")
    assert event.endpoint == "POST /v1/chat/completions event:message"
    assert event.change == "type_changed" and "content" in event.path


def test_findings_survive_a_restart_and_are_not_raised_again(start_bridge, upstream, shapes):
    b = start(start_bridge, upstream)
    learn(b)
    shapes["over"] = {"price": "10.00"}
    get(b, 20)
    wait_for(lambda: drifts(b), what="a drift event")
    b.stop()
    again = start_bridge(config_yaml(route_yaml("api", ("api-up", upstream.url),
                                                extra="drift: {learn: true}")),
                         name="again.yaml")
    get(again, 21)
    assert drifts(again) == []  # known from the store: counted, not raised


def test_bridge_status_counts_a_routes_new_findings(start_bridge, upstream, shapes):
    from tests.conftest import control_get

    b = start(start_bridge, upstream)
    learn(b)
    shapes["over"] = {"price": "10.00", "currency": "EUR"}
    get(b, 20)
    wait_for(lambda: len(drifts(b)) == 2, what="two findings")
    control = json.loads((b.home / "control.json").read_text())
    route = next(r for r in control_get(control, "status")["routes"] if r["name"] == "api")
    assert route["drift"] == {"breaking": 1, "additive": 1}
