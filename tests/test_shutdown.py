"""SIGTERM and Ctrl-C drain: bridge stops accepting, lets the requests in flight finish (up
to `--drain` seconds), settles their spend and exits 0 without a traceback; a second
signal stops at once; a request cut by the end of the grace settles at its reservation.

`bridge up` runs as a user runs it (a subprocess, real signals); the clients are httpx,
the upstream a local aiohttp server that answers slowly."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from aiohttp import web

from tests.conftest import bridge_cmd, cli_env, config_yaml, route_yaml, start_up, wait_for
from tests.test_spend import chat_body, chat_usage

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def slow_answer(seconds: float):
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(seconds)
        return web.json_response(chat_body("gpt-4o-mini", chat_usage(10, 2)))
    return handler


def setup(tmp_path, upstream, seconds: float, budget: bool = True):
    upstream.on("/v1/chat/completions", slow_answer(seconds))
    extra = "budget: {limit_usd: 10, period: day}" if budget else ""
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_yaml(route_yaml("llm", ("llm-up", upstream.url),
                                          spend="{provider: openai}", extra=extra)))
    return cfg, cli_env(tmp_path / "home")


def listener(control: dict) -> str:
    status = httpx.get(control["url"] + "/api/v1/status", trust_env=False, timeout=10,
                       headers={"Authorization": f"Bearer {control['token']}"}).json()
    return "http://" + next(x["address"] for x in status["listeners"] if x["name"] == "llm")


def post_many(url: str, n: int):
    def one(_):
        with httpx.Client(trust_env=False, timeout=30) as http:
            return http.post(url + "/v1/chat/completions", json=BODY)
    pool = ThreadPoolExecutor(n)
    return pool, [pool.submit(one, i) for i in range(n)]


def test_sigterm_lets_requests_in_flight_finish_and_exits_0(tmp_path, upstream):
    cfg, env = setup(tmp_path, upstream, seconds=1.5)
    proc, control = start_up(["-c", str(cfg), "-q"], tmp_path, env)
    url = listener(control)
    pool, futures = post_many(url, 5)
    wait_for(lambda: len(upstream.calls) == 5, timeout=10, what="5 requests at the upstream")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # new connections are refused while the five finish
    host, port = url.removeprefix("http://").rsplit(":", 1)
    time.sleep(0.3)
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((host, int(port))) != 0
    answers = [f.result(timeout=15) for f in futures]
    pool.shutdown()
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 8
    assert [a.status_code for a in answers] == [200] * 5
    assert all(a.json()["usage"]["completion_tokens"] == 2 for a in answers)
    assert "Traceback" not in err and "CancelledError" not in err
    assert "finishing the requests in flight" in err
    # their spend settled: five priced calls in the ledger, nothing left reserved
    report = json.loads(bridge_cmd(["spend", "--json"], env, tmp_path).stdout)
    assert report["calls"] == 5
    assert all(g.get("unpriced", 0) == 0 for g in report["groups"])


def test_requests_past_the_grace_are_cut_and_settle_at_their_reservation(tmp_path, upstream):
    cfg, env = setup(tmp_path, upstream, seconds=6)
    proc, control = start_up(["-c", str(cfg), "-q", "--drain", "0.5"], tmp_path, env)
    pool, futures = post_many(listener(control), 2)
    wait_for(lambda: len(upstream.calls) == 2, timeout=10, what="2 requests at the upstream")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 5
    assert "2 request(s) still in flight" in err
    assert "Traceback" not in err
    for f in futures:
        try:
            f.result(timeout=10)
        except httpx.HTTPError:
            pass  # cut: the client sees the connection end
    pool.shutdown()
    rows = json.loads(bridge_cmd(["spend", "--json", "--by", "model"], env, tmp_path).stdout)
    assert rows["calls"] == 2  # in the ledger as estimated, at what was reserved
    assert float(rows["total_usd"]) > 0


def test_a_second_signal_stops_at_once(tmp_path, upstream):
    cfg, env = setup(tmp_path, upstream, seconds=20, budget=False)
    proc, control = start_up(["-c", str(cfg), "-q", "--drain", "30"], tmp_path, env)
    pool, futures = post_many(listener(control), 1)
    wait_for(lambda: len(upstream.calls) == 1, timeout=10, what="the request at the upstream")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert time.monotonic() - t0 < 8
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    pool.shutdown(wait=False, cancel_futures=True)


def test_a_bad_drain_value_is_a_one_line_error(tmp_path):
    r = bridge_cmd(["up", "--drain", "-1"], cli_env(tmp_path / "home"), tmp_path)
    assert r.returncode == 2
    assert "--drain" in r.stderr and "Traceback" not in r.stderr


def reserved(control: dict) -> float:
    report = httpx.get(control["url"] + "/api/v1/spend", trust_env=False, timeout=10,
                       headers={"Authorization": f"Bearer {control['token']}"}).json()
    return sum(float(b["reserved_usd"]) for b in report["budgets"])


def test_a_killed_bridges_reservations_are_given_back_by_the_next_one(tmp_path, upstream):
    """SIGKILL while three requests hold money: the next bridge on the same store sees that
    the owner is gone and releases what it held, instead of counting it until the period
    ends."""
    cfg, env = setup(tmp_path, upstream, seconds=8)
    proc, control = start_up(["-c", str(cfg), "-q"], tmp_path, env)
    pool, futures = post_many(listener(control), 3)
    wait_for(lambda: len(upstream.calls) == 3, timeout=10, what="3 requests at the upstream")
    held = wait_for(lambda: reserved(control), timeout=5, what="the reservations")
    time.sleep(0.3)  # the holds record is written within the settler's 50 ms tick
    proc.kill()
    proc.communicate(timeout=10)
    pool.shutdown(wait=False, cancel_futures=True)
    (tmp_path / "home" / "control.json").unlink(missing_ok=True)
    proc2, control2 = start_up(["-c", str(cfg), "-q"], tmp_path, env)
    try:
        assert held > 0
        wait_for(lambda: reserved(control2) == 0, timeout=10, what="the held money released")
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.communicate(timeout=15)
