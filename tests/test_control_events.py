"""GET /api/v1/events (server-sent events) and GET /api/v1/flows/{id}, read with a plain
HTTP client against a real bridge and a real upstream."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from bridge_cli.engine.events import NoticeEvent
from tests.conftest import config_yaml, json_answer, route_yaml, wait_for

BREAKER = "breaker: {failure_rate: 50%, window: 2, min_calls: 2, open_for: 30s}"


class SSE:
    """Reads a server-sent event stream in a thread: (id, event, data) as they come."""

    def __init__(self, url: str, token: str, headers: dict | None = None) -> None:
        self.events: list[tuple[int | None, str, dict]] = []
        self._client = httpx.Client(trust_env=False, timeout=httpx.Timeout(10, read=None))
        self._cm = self._client.stream("GET", url + "/api/v1/events", headers={
            "Authorization": f"Bearer {token}", **(headers or {})})
        self.response = self._cm.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if line == "":
                    if "event" in fields:
                        eid = int(fields["id"]) if "id" in fields else None
                        self.events.append((eid, fields["event"], json.loads(fields["data"])))
                    fields = {}
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
        except (httpx.HTTPError, RuntimeError):
            pass

    def of(self, kind: str) -> list[tuple[int | None, str, dict]]:
        return [e for e in self.events if e[1] == kind]

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def sse():
    opened: list[SSE] = []

    def open_(*args, **kw) -> SSE:
        s = SSE(*args, **kw)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


def _bridge(start_bridge, upstream_factory):
    good, bad = upstream_factory(), upstream_factory()
    good.on("/v1/chat", json_answer({"ok": True, "api_key": "sk-secretsecretsecret123456"}))
    bad.on("/v1/chat", json_answer({"error": "down"}, status=503))
    cfg = config_yaml(route_yaml("api", ("main", bad.url), ("spare", good.url),
                                 extra=f"strategy: fallback\nretry: {{methods: [POST]}}\n{BREAKER}"))
    return start_bridge(cfg)


def test_the_stream_carries_flows_breakers_and_faults_with_increasing_ids(
        start_bridge, upstream_factory, client, sse):
    b = _bridge(start_bridge, upstream_factory)
    stream = sse(b.control_url, b.token)
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    wait_for(lambda: stream.of("hello"), what="the hello event")
    for _ in range(3):
        assert client.post(b.url("api") + "/v1/chat", json={}).status_code == 200
    b.control().add_fault({"name": "slow", "route": "api", "latency": "1ms"})
    b.control().remove_fault("slow")
    wait_for(lambda: len(stream.of("fault")) == 2, what="the fault events")
    flows = wait_for(lambda: len(stream.of("flow")) == 3 and stream.of("flow"), what="3 flows")
    assert [f[2]["status"] for f in flows] == [200, 200, 200]
    assert [t["upstream"] for t in flows[0][2]["tries"]] == ["main", "spare"]
    breakers = wait_for(lambda: stream.of("breaker"), what="the breaker event")
    assert (breakers[0][2]["upstream"], breakers[0][2]["new"]) == ("main", "open")
    assert [f[2]["what"] for f in stream.of("fault")] == ["injected", "cleared"]
    ids = [e[0] for e in stream.events if e[0] is not None]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] >= 1
    stats = wait_for(lambda: [s for s in stream.of("stats") if s[2]["events"].get("flow") == 3],
                     what="a stats event counting the flows")[-1][2]
    assert stats["routes"]["api"]["requests"] == 3
    assert {x["upstream"]: x["state"] for x in stats["breakers"]}["main"] == "open"


def test_last_event_id_resumes_after_the_last_event_seen(start_bridge, upstream, client, sse):
    upstream.on("/x", json_answer({"ok": True}))
    b = start_bridge(config_yaml(route_yaml("api", ("main", upstream.url))))
    first = sse(b.control_url, b.token)
    wait_for(lambda: first.of("hello"), what="hello")
    for _ in range(2):
        client.get(b.url("api") + "/x")
    seen = wait_for(lambda: len(first.of("flow")) == 2 and first.of("flow"), what="two flows")
    first.close()
    for _ in range(3):  # while no one listens
        client.get(b.url("api") + "/x")
    wait_for(lambda: b.bridge.control.hub.last_id >= 5, what="five events published")
    again = sse(b.control_url, b.token, {"Last-Event-ID": str(seen[-1][0])})
    resumed = wait_for(lambda: len(again.of("flow")) == 3 and again.of("flow"),
                       what="the three flows missed")
    assert [e[0] for e in resumed] == [seen[-1][0] + 1, seen[-1][0] + 2, seen[-1][0] + 3]
    assert not again.of("dropped")
    # Last-Event-ID 0: everything the ring still holds
    everything = sse(b.control_url, b.token, {"Last-Event-ID": "0"})
    assert len(wait_for(lambda: len(everything.of("flow")) == 5 and everything.of("flow"),
                        what="all five flows")) == 5


def test_the_event_stream_is_guarded_like_every_control_path(start_bridge, upstream):
    b = start_bridge(config_yaml(route_yaml("api", ("main", upstream.url))))
    url = b.control_url + "/api/v1/events"
    with httpx.Client(trust_env=False, timeout=5) as c:
        assert c.get(url).status_code == 401
        wrong = c.get(url, headers={"Authorization": f"Bearer {b.token}",
                                    "Host": "evil.example:80"})
        assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "forbidden_host"
        foreign = c.get(url, headers={"Authorization": f"Bearer {b.token}",
                                      "Origin": "http://evil.example"})
        assert foreign.json()["error"]["type"] == "forbidden_origin"
        assert c.get(b.control_url + "/api/v1/flows/nope",
                     headers={"Authorization": f"Bearer {b.token}"}).status_code == 404
        assert c.get(b.control_url + "/api/v1/flows/x").status_code == 401


def test_a_client_that_does_not_read_slows_nothing_and_learns_what_it_missed(
        start_bridge, upstream, client):
    upstream.on("/x", json_answer({"ok": True}))
    b = start_bridge(config_yaml(route_yaml("api", ("main", upstream.url))))
    host, port = b.control_url.removeprefix("http://").split(":")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((host, int(port)))
    stuck.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  f"Authorization: Bearer {b.token}\r\nLast-Event-ID: 0\r\n\r\n".encode())
    bus = b.bridge.bus
    big = "x" * 2000
    b.lt.loop.call_soon_threadsafe(
        lambda: [bus.publish(NoticeEvent("info", big)) for _ in range(3000)])
    started = time.monotonic()
    for _ in range(30):  # the proxy serves at full speed while that client is stuck
        assert client.get(b.url("api") + "/x").status_code == 200
    assert time.monotonic() - started < 5
    stuck.settimeout(10)
    seen = b""
    deadline = time.monotonic() + 20
    while b"event: dropped" not in seen and time.monotonic() < deadline:
        chunk = stuck.recv(65536)
        if not chunk:
            break
        seen = seen[-200_000:] + chunk
    stuck.close()
    assert b"event: dropped" in seen
    line = seen[seen.index(b"event: dropped"):].split(b"\n")[1]
    assert json.loads(line.removeprefix(b"data: "))["dropped"] > 0


def test_a_flow_is_served_in_full_with_secrets_redacted(start_bridge, upstream_factory, client):
    b = _bridge(start_bridge, upstream_factory)
    r = client.post(b.url("api") + "/v1/chat", json={"model": "m", "messages": []},
                    headers={"Authorization": "Bearer sk-livelivelivelivelive1234"})
    rid = r.headers["x-bridge-request-id"]
    with httpx.Client(trust_env=False, timeout=5) as c:
        doc = wait_for(lambda: (c.get(f"{b.control_url}/api/v1/flows/{rid}", headers={
            "Authorization": f"Bearer {b.token}"})).json(), what="the flow document")
    assert doc["flow"]["id"] == rid and doc["flow"]["status"] == 200
    assert [t["upstream"] for t in doc["flow"]["tries"]] == ["main", "spare"]
    assert json.loads(doc["request"]["body"]) == {"model": "m", "messages": []}
    req_headers = dict((k.lower(), v) for k, v in doc["request"]["headers"])
    assert "sk-livelivelivelivelive1234" not in req_headers["authorization"]
    assert "redacted" in req_headers["authorization"]
    assert doc["response"]["body"] and "sk-secretsecretsecret123456" not in doc["response"]["body"]
    assert "ok" in doc["response"]["body"]
    assert any(k.lower() == "content-type" for k, _ in doc["response"]["headers"])
