"""Resilience policy on a fake clock: breakers, strategies, retry budget, the attempt loop.

No sockets here: the engine decides, and these tests drive it in microseconds.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from bridge_cli.config.loader import parse_config
from bridge_cli.config.model import Breaker, SlowCall, Upstream
from bridge_cli.engine.attempts import CONNECT, AttemptLoop, Outcome
from bridge_cli.engine.backoff import backoff_delay
from bridge_cli.engine.balance import LeastLatency, RoundRobin, Weighted
from bridge_cli.engine.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from bridge_cli.engine.resilience import Resilience
from bridge_cli.engine.retry_budget import RetryBudget
from tests.conftest import FakeClock


def breaker(clock, **kw) -> tuple[CircuitBreaker, list]:
    seen = []
    cfg = Breaker(**{"failure_rate": 0.5, "window": 4, "min_calls": 4, "open_for": 30.0,
                     "half_open_calls": 2, **kw})
    b = CircuitBreaker("r", "u", cfg, clock=clock, wall=lambda: 1.7e9 + clock.now,
                       on_transition=seen.append)
    return b, seen


# --- breaker ---------------------------------------------------------------------------

def test_breaker_stays_closed_until_min_calls_are_recorded():
    clock = FakeClock()
    b, seen = breaker(clock)
    for _ in range(3):
        assert b.allow()
        b.record(True, 0.01)
    assert b.state == CLOSED and seen == []
    b.allow()
    b.record(True, 0.01)
    assert b.state == OPEN
    assert [(t.old, t.new) for t in seen] == [(CLOSED, OPEN)]


def test_breaker_opens_at_the_failure_rate_over_the_sliding_window():
    clock = FakeClock()
    b, _ = breaker(clock)
    for failed in (False, False, False, True, True):  # window of 4: F F T T -> 50%
        b.allow()
        b.record(failed, 0.01)
    assert b.state == OPEN


def test_open_breaker_fails_fast_then_half_opens_after_open_for():
    clock = FakeClock()
    b, seen = breaker(clock)
    for _ in range(4):
        b.allow()
        b.record(True, 0.01)
    assert not b.allow()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow() and b.state == HALF_OPEN
    assert b.allow()  # half_open_calls: 2 trial permits
    assert not b.allow()  # no third concurrent trial


def test_half_open_closes_when_every_trial_succeeds():
    clock = FakeClock()
    b, seen = breaker(clock)
    for _ in range(4):
        b.allow()
        b.record(True, 0.01)
    clock.now += 31
    for _ in range(2):
        assert b.allow()
        b.record(False, 0.01)
    assert b.state == CLOSED
    assert [t.new for t in seen] == [OPEN, HALF_OPEN, CLOSED]
    assert b.snapshot()["calls"] == 0  # a fresh window after closing


def test_any_failed_trial_reopens_the_breaker():
    clock = FakeClock()
    b, seen = breaker(clock)
    for _ in range(4):
        b.allow()
        b.record(True, 0.01)
    clock.now += 31
    b.allow()
    b.record(False, 0.01)
    b.allow()
    b.record(True, 0.01)
    assert b.state == OPEN and not b.allow()
    assert [t.new for t in seen] == [OPEN, HALF_OPEN, OPEN]


def test_slow_calls_open_the_breaker_by_their_own_rate():
    clock = FakeClock()
    b, _ = breaker(clock, slow_call=SlowCall(duration=1.0, rate=0.75), failure_rate=1.0)
    for d in (2.0, 2.0, 0.1, 2.0):
        b.allow()
        b.record(False, d)
    assert b.state == OPEN


def test_restored_open_state_keeps_the_remaining_open_time():
    clock = FakeClock()
    b, _ = breaker(clock)
    opened_wall = 1.7e9 + clock.now - 20  # opened 20 s ago in an earlier run
    b.restore(opened_wall)
    assert not b.allow()
    clock.now += 10.5
    assert b.allow() and b.state == HALF_OPEN


# --- strategies -------------------------------------------------------------------------

UPS = (Upstream("a", "http://a", 3.0), Upstream("b", "http://b", 1.0))


def test_weighted_first_pick_follows_the_weights():
    w = Weighted(random.Random(7))
    firsts = Counter(w.order(UPS)[0].name for _ in range(10000))
    assert abs(firsts["a"] / 10000 - 0.75) < 0.02
    assert all(len(w.order(UPS)) == 2 for _ in range(10))  # the rest stay as fallbacks


def test_round_robin_rotates_the_first_upstream():
    rr = RoundRobin(random.Random(1))
    assert [rr.order(UPS)[0].name for _ in range(4)] == ["a", "b", "a", "b"]


def test_least_latency_prefers_the_fastest_and_still_explores():
    ll = LeastLatency(random.Random(3))
    ll.observe("a", 0.060)
    ll.observe("b", 0.005)
    firsts = Counter(ll.order(UPS)[0].name for _ in range(2000))
    assert firsts["b"] > 1800
    assert firsts["a"] > 20  # probing, so a recovered upstream is noticed


def test_least_latency_tries_an_unmeasured_upstream_first():
    ll = LeastLatency(random.Random(3))
    ll.observe("a", 0.001)
    ll.explore = 0
    assert ll.order(UPS)[0].name == "b"


# --- backoff and retry budget -----------------------------------------------------------

def test_backoff_is_exponential_and_capped_with_each_jitter():
    rng = random.Random(0)
    assert [backoff_delay(n, 0.1, 1.0, "none", rng) for n in range(6)] == \
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for n in range(6):
        ceiling = min(1.0, 0.1 * 2**n)
        assert 0 <= backoff_delay(n, 0.1, 1.0, "full", rng) <= ceiling
        assert ceiling / 2 <= backoff_delay(n, 0.1, 1.0, "equal", rng) <= ceiling


def test_retry_budget_bounds_retries_by_ratio_plus_floor_over_the_window():
    clock = FakeClock()
    budget = RetryBudget(0.2, 0.1, clock)  # floor: 0.1/s over 10 s = 1 retry
    for _ in range(100):
        budget.record_request()
    allowed = sum(budget.allow_retry() for _ in range(100))
    assert allowed == 21  # 20% of 100, plus the floor of 1
    clock.now += 10.1  # the window slides: old requests and retries no longer count
    budget.record_request()
    assert sum(budget.allow_retry() for _ in range(10)) == 1


# --- the attempt loop ------------------------------------------------------------------

def route_of(yaml_route: str):
    return parse_config("version: 2\nroutes:\n" + yaml_route).routes[0]


def scripted(outcomes: dict[str, list[Outcome]], calls: list[str]):
    async def send(upstream, attempt):
        calls.append(upstream.name)
        return outcomes[upstream.name].pop(0)

    return send


def run_loop(route, method, outcomes, **kw):
    clock = FakeClock()
    calls: list[str] = []
    loop = AttemptLoop(route, sleep=clock.sleep, rng=random.Random(1), **kw)
    result = asyncio.run(loop.run(method, route.upstreams, scripted(outcomes, calls)))
    return result, calls, clock


TWO = """  - name: r
    listen: 127.0.0.1:0
    upstreams: [{name: a, url: "http://a"}, {name: b, url: "http://b"}]
"""


def test_each_upstream_gets_its_attempts_then_the_next_one():
    route = route_of(TWO + "    retry: {attempts: 2, backoff: {initial: 100ms, max: 1s, jitter: none}}\n")
    result, calls, clock = run_loop(route, "GET", {
        "a": [Outcome("response", 503), Outcome("response", 503)],
        "b": [Outcome("response", 200)]})
    assert calls == ["a", "a", "b"]
    assert result.final.status == 200 and result.upstream.name == "b"
    assert [t.outcome for t in result.tries] == ["503", "503", "ok"]
    assert clock.now == pytest.approx(1000.1)  # one backoff, none before a fallback


def test_without_retry_a_request_gets_one_try_per_upstream():
    result, calls, _ = run_loop(route_of(TWO), "GET", {
        "a": [Outcome("response", 502)], "b": [Outcome("response", 200)]})
    assert calls == ["a", "b"]


def test_a_refused_upstream_is_left_at_once_when_another_remains():
    route = route_of(TWO + "    retry: {attempts: 3}\n")
    result, calls, clock = run_loop(route, "GET", {
        "a": [Outcome(CONNECT, never_left=True)], "b": [Outcome("response", 200)]})
    assert calls == ["a", "b"] and clock.now == 1000.0


def test_post_moves_on_only_when_it_never_left_unless_opted_in():
    route = route_of(TWO + "    retry: {attempts: 2}\n")
    result, calls, _ = run_loop(route, "POST", {"a": [Outcome("response", 503)], "b": []})
    assert calls == ["a"] and result.final.status == 503
    result, calls, _ = run_loop(route, "POST", {
        "a": [Outcome(CONNECT, never_left=True)], "b": [Outcome("response", 200)]})
    assert calls == ["a", "b"]
    opted = route_of(TWO + "    retry: {attempts: 2, methods: [POST]}\n")
    result, calls, _ = run_loop(opted, "POST", {
        "a": [Outcome("response", 503), Outcome("response", 200)], "b": []})
    assert calls == ["a", "a"] and result.final.status == 200


def test_retry_after_within_max_is_waited_for_and_beyond_max_moves_on():
    route = route_of(TWO + "    retry: {attempts: 2, backoff: {initial: 10ms, max: 2s}}\n")
    result, calls, clock = run_loop(route, "GET", {
        "a": [Outcome("response", 429, retry_after=1.5), Outcome("response", 200)], "b": []})
    assert calls == ["a", "a"] and clock.now == pytest.approx(1001.5)
    result, calls, clock = run_loop(route, "GET", {
        "a": [Outcome("response", 429, retry_after=30)], "b": [Outcome("response", 429, retry_after=30)]})
    assert calls == ["a", "b"] and clock.now == 1000.0
    assert result.final.status == 429  # nothing left: the 429 goes to the client


def test_open_breakers_are_skipped_and_all_open_means_unavailable():
    config = parse_config("version: 2\nroutes:\n" + TWO +
                          "    breaker: {min_calls: 1, window: 1, open_for: 60s}\n")
    route = config.routes[0]
    clock = FakeClock()
    res = Resilience(clock=clock, wall=clock, rng=random.Random(0), on_transition=lambda t: None)
    res.sync(config)
    rr = res.get("r")
    rr.breakers["a"].allow()
    rr.breakers["a"].record(True, 0.1)
    result, calls, _ = run_loop(route, "GET", {"a": [], "b": [Outcome("response", 200)]}, guard=rr)
    assert calls == ["b"]
    assert [t.outcome for t in result.tries] == ["breaker_open", "ok"]
    rr.breakers["b"].allow()
    rr.breakers["b"].record(True, 0.1)
    result, calls, _ = run_loop(route, "GET", {"a": [], "b": []}, guard=rr)
    assert calls == [] and result.all_unavailable


def test_reload_keeps_breakers_whose_config_did_not_change():
    base = "version: 2\nroutes:\n" + TWO + "    breaker: {min_calls: 1, window: 1}\n"
    clock = FakeClock()
    res = Resilience(clock=clock, wall=clock, rng=random.Random(0), on_transition=lambda t: None)
    res.sync(parse_config(base))
    before = res.get("r").breakers["a"]
    res.sync(parse_config(base.replace("timeout", "timeout") + "    timeout: 5s\n"))
    assert res.get("r").breakers["a"] is before
    res.sync(parse_config(base.replace("window: 1", "window: 2")))
    assert res.get("r").breakers["a"] is not before
