"""Fault injection decisions (engine/chaos.py): fast, no sockets, a fake clock.

What every chaos run relies on: a decision derives only from (seed, fault name, the
request's index for that fault), so a seed replays a run exactly; 0% is exactly off;
`every`, `first`, `count` and `for` are exact; and the answers, presets and body shaping a
fault asks for are what the proxy will apply. End-to-end behaviour through a real bridge
is in test_chaos_e2e.py.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from bridge_cli.config.loader import parse_config, parse_fault
from bridge_cli.config.model import Fault, FaultMatch
from bridge_cli.engine.chaos import (
    PRESETS,
    Chaos,
    Shaping,
    corrupt_body,
    describe,
    parse_fault_header,
    resolve_answer,
    shaping_of,
)
from tests.conftest import FakeClock


def chaos_with(*faults: Fault, seed: int = 42, clock: FakeClock | None = None) -> Chaos:
    c = Chaos(seed, clock or FakeClock())
    for f in faults:
        c.add(f, "config")
    return c


FAULT_FIELDS = {f.name for f in dataclasses.fields(Fault)}


def fault(name: str = "f", **keys) -> Fault:
    """A fault on route `api`; keys that aren't Fault fields are its actions, parsed
    (`status=None` leaves status out), and `status: 503` when it has none."""
    keys.setdefault("route", "api")
    actions = {k: keys.pop(k) for k in list(keys) if k not in FAULT_FIELDS}
    actions = {k: v for k, v in actions.items() if v is not None} or {"status": 503}
    return Fault(name=name, **keys, actions=actions)


def decide(c: Chaos, route: str = "api", upstream: str | None = "primary", method: str = "GET",
           path: str = "/v1/x", headers: dict | None = None, stage: str = "upstream"):
    return c.decide(stage, route, upstream, method, path, headers or {})


def fired(c: Chaos, n: int, name: str = "f", **kw) -> list[int]:
    """Indexes (0-based) of the n tries that `name` hit."""
    out = []
    for i in range(n):
        hit = decide(c, **kw)
        if hit is not None and name in hit.names:
            out.append(i)
    return out


# --- reproducibility ---------------------------------------------------------------------------


def test_the_same_seed_fires_on_exactly_the_same_tries():
    a = fired(chaos_with(fault(probability=0.3), seed=42), 500)
    b = fired(chaos_with(fault(probability=0.3), seed=42), 500)
    assert a == b
    assert 100 < len(a) < 200


def test_a_different_seed_fires_on_a_different_set():
    a = fired(chaos_with(fault(probability=0.3), seed=42), 500)
    b = fired(chaos_with(fault(probability=0.3), seed=43), 500)
    assert a != b


def test_the_fault_name_is_part_of_the_draw():
    a = fired(chaos_with(fault("one", probability=0.3)), 500, name="one")
    b = fired(chaos_with(fault("two", probability=0.3)), 500, name="two")
    assert a != b


def test_a_decision_depends_only_on_seed_name_and_the_faults_own_index():
    """Other faults and traffic that doesn't match must not shift which tries a fault hits
    (no shared random stream)."""
    alone = fired(chaos_with(fault("f", probability=0.3)), 300)

    busy = chaos_with(fault("noise", route="*", probability=0.5, latency=0.01),
                      fault("f", probability=0.3),
                      fault("other", route="other", probability=0.7))
    hits = []
    index = 0
    for i in range(900):
        if i % 3 == 0:  # matches "f"
            hit = decide(busy)
            if hit is not None and "f" in hit.names:
                hits.append(index)
            index += 1
        else:  # other routes' tries: "noise" and "other" draw, "f" does not count them
            decide(busy, route="other" if i % 3 == 1 else "third")
    assert hits == alone


def test_2000_draws_at_30_percent_land_within_3_points_for_any_seed():
    for seed in range(10):
        n = len(fired(chaos_with(fault(probability=0.3), seed=seed), 2000))
        assert 0.27 <= n / 2000 <= 0.33, (seed, n)


def test_2000_draws_at_30_percent_with_seed_42_hit_exactly_589():
    """Pinned: a seed must replay the same run on every machine and bridge version."""
    c = chaos_with(fault("flaky", probability=0.3), seed=42)
    assert len(fired(c, 2000, name="flaky")) == 589
    assert c.faults["flaky"].hits == 589
    assert c.faults["flaky"].index == 2000


def test_zero_percent_is_exactly_off():
    for seed in range(5):
        c = chaos_with(fault(probability=0.0), seed=seed)
        assert fired(c, 5000) == []
        assert c.faults["f"].hits == 0
        assert c.faults["f"].index == 5000  # the tries were seen, just never hit


def test_one_hundred_percent_always_fires():
    assert fired(chaos_with(fault(probability=1.0)), 1000) == list(range(1000))


def test_probability_defaults_to_one_hundred_percent():
    raw = {"name": "f", "route": "*", "status": 503}
    f = parse_fault(raw, parse_config("version: 2\n"))
    assert f.probability == 1.0
    assert fired(chaos_with(f), 50) == list(range(50))


# --- every, first, count, for -------------------------------------------------------------------


def test_every_3_hits_the_third_sixth_and_ninth():
    assert fired(chaos_with(fault(every=3)), 12) == [2, 5, 8, 11]


def test_first_2_hits_the_first_two_only():
    assert fired(chaos_with(fault(first=2)), 10) == [0, 1]


def test_first_with_a_probability_draws_only_among_the_first():
    c = chaos_with(fault(first=100, probability=0.5))
    hits = fired(c, 1000)
    assert hits and max(hits) < 100


def test_count_removes_the_fault_after_n_hits():
    c = chaos_with(fault(count=3, probability=0.5))
    hits = fired(c, 200)
    assert len(hits) == 3
    assert "f" not in c.faults
    assert c.snapshot() == []


def test_for_expires_the_fault_after_its_duration():
    clock = FakeClock()
    c = chaos_with(fault(for_=300.0), clock=clock)
    assert decide(c) is not None
    clock.now += 120
    snap = c.snapshot()[0]
    assert snap["remaining_s"] == 180.0
    assert decide(c) is not None
    clock.now += 180
    assert decide(c) is None
    assert c.faults == {}


def test_the_index_counts_matching_tries_only():
    c = chaos_with(fault(every=2, match=FaultMatch(method="POST")))
    seq = []
    for method in ["GET", "POST", "GET", "POST", "POST", "GET", "POST"]:
        hit = decide(c, method=method)
        seq.append(hit is not None)
    # POSTs are the fault's tries 0, 1, 2, 3: every 2nd is hit
    assert seq == [False, False, False, True, False, False, True]
    assert c.faults["f"].index == 4


def test_each_try_of_a_request_is_its_own_decision():
    """Chaos is decided per try: a retried request asks again and advances the index."""
    c = chaos_with(fault(first=2))
    outcomes = [decide(c) is not None for _ in range(3)]  # three tries of one request
    assert outcomes == [True, True, False]


# --- targeting ----------------------------------------------------------------------------------


def test_route_star_matches_every_route_and_a_name_only_its_own():
    c = chaos_with(fault("mine", route="api"), fault("all", route="*"))
    assert decide(c, route="api").names == ["mine", "all"]
    assert decide(c, route="other").names == ["all"]


def test_upstream_targets_one_upstream_of_the_route():
    c = chaos_with(fault(upstream="primary"))
    assert decide(c, upstream="primary") is not None
    assert decide(c, upstream="backup") is None


@pytest.mark.parametrize(("method", "path", "headers", "hit"), [
    ("POST", "/v1/chat/completions", {"x-test": "chaos"}, True),
    ("GET", "/v1/chat/completions", {"x-test": "chaos"}, False),
    ("POST", "/v1/embeddings", {"x-test": "chaos"}, False),
    ("POST", "/v1/chat/completions", {"x-test": "calm"}, False),
    ("POST", "/v1/chat/completions", {}, False),
    ("post", "/v1/chat/deep/completions", {"x-test": "chaos"}, True),
])
def test_match_method_path_glob_and_header(method, path, headers, hit):
    c = chaos_with(fault(match=FaultMatch(method="POST", path="/v1/chat/**",
                                          header={"x-test": "chaos"})))
    assert (decide(c, method=method, path=path, headers=headers) is not None) is hit


def test_stage_client_faults_are_decided_apart_from_upstream_tries():
    c = chaos_with(fault("late", stage="client", status=429), fault("early", status=503))
    assert decide(c, stage="upstream").names == ["early"]
    assert decide(c, stage="client").names == ["late"]
    assert c.faults["late"].index == 1 and c.faults["early"].index == 1


# --- what a hit does ----------------------------------------------------------------------------


def test_latency_with_jitter_stays_within_plus_minus_jitter_and_replays():
    def delays(seed):
        c = chaos_with(fault(latency=0.3, jitter=0.1, status=None), seed=seed)
        return [decide(c).delay for _ in range(500)]

    d = delays(7)
    assert all(0.2 - 1e-9 <= x <= 0.4 + 1e-9 for x in d)
    assert min(d) < 0.22 and max(d) > 0.38  # uniform ±, both sides used
    assert 0.29 <= sorted(d)[250] <= 0.31
    assert delays(7) == d
    assert delays(8) != d


def test_jitter_never_makes_a_negative_delay():
    c = chaos_with(fault(latency=0.01, jitter=0.5, status=None))
    assert all(decide(c).delay >= 0.0 for _ in range(200))


def test_a_status_fault_ends_the_try_and_latency_adds_up():
    c = chaos_with(fault("slow", latency=0.2, status=None), fault("err", status=502))
    hit = decide(c)
    assert hit.names == ["slow", "err"]
    assert hit.delay == pytest.approx(0.2)
    assert hit.status == 502 and hit.terminal


def test_latency_alone_is_not_terminal_the_try_goes_on():
    hit = decide(chaos_with(fault(latency=0.1, status=None)))
    assert not hit.terminal and hit.status is None


@pytest.mark.parametrize("key", ["reset", "hang"])
def test_reset_and_hang_end_the_try(key):
    hit = decide(chaos_with(fault(**{key: True})))
    assert hit.terminal and getattr(hit, key) is True


def test_status_answer_with_headers_and_body():
    f = fault(status=418, headers={"X-Test": "yes", "retry-after": "2"}, body='{"custom": true}')
    status, headers, body = resolve_answer(f)
    assert status == 418
    assert headers["x-test"] == "yes" and headers["retry-after"] == "2"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"custom": True}


def test_a_bare_status_answers_with_bridges_json_naming_the_fault():
    status, headers, body = resolve_answer(fault("boom", status=503))
    assert status == 503
    err = json.loads(body)["error"]
    assert err["type"] == "injected_fault" and "boom" in err["message"]


@pytest.mark.parametrize(("preset", "status", "must_have"), [
    ("openai-429", 429, {"retry-after", "x-ratelimit-remaining-requests",
                         "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens"}),
    ("openai-500", 500, {"x-request-id"}),
    ("anthropic-429", 429, {"retry-after", "anthropic-ratelimit-requests-remaining",
                            "request-id"}),
    ("anthropic-529-overloaded", 529, {"request-id"}),
    ("github-403-rate-limit", 403, {"x-ratelimit-remaining", "x-ratelimit-reset",
                                    "x-ratelimit-limit"}),
])
def test_presets_answer_like_the_real_provider(preset, status, must_have):
    got_status, headers, body = resolve_answer(fault(preset=preset, status=None))
    assert got_status == status
    assert must_have <= set(headers)
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    if preset.startswith("openai"):
        assert set(doc["error"]) == {"message", "type", "param", "code"}
    elif preset.startswith("anthropic"):
        assert doc["type"] == "error" and {"type", "message"} <= set(doc["error"])
    else:
        assert "rate limit" in doc["message"] and "documentation_url" in doc


def test_every_preset_is_covered():
    assert set(PRESETS) == {"openai-429", "openai-500", "anthropic-429",
                            "anthropic-529-overloaded", "github-403-rate-limit"}


def test_a_preset_part_can_be_overridden():
    status, headers, body = resolve_answer(fault(preset="openai-429", status=None,
                                                 headers={"retry-after": "7"}))
    assert status == 429 and headers["retry-after"] == "7"
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("body", [
    json.dumps({"id": "chatcmpl-1", "choices": [{"message": {"content": "hi"}}]}).encode(),
    b"[1, 2, 3]",
    b"{}",
    b"",
])
def test_a_corrupted_body_no_longer_parses_as_json(body):
    bad = corrupt_body(body, "application/json")
    assert bad != body
    with pytest.raises(ValueError):
        json.loads(bad)


def test_shaping_truncate_in_bytes_or_a_share():
    assert Shaping(truncate=100).truncate_at(1000) == 100
    assert Shaping(truncate=100).truncate_at(None) == 100
    assert Shaping(truncate=0.5).truncate_at(1000) == 500
    assert Shaping(truncate=0.5).truncate_at(None) is None
    assert Shaping().truncate_at(1000) is None


def test_shaping_of_a_fault_and_merging_two():
    assert shaping_of(fault(status=503)) is None
    a = shaping_of(fault(throttle=10240, status=None))
    b = shaping_of(fault(sse_delay=0.2, throttle=2048, status=None))
    merged = a.merge(b)
    assert merged.throttle == 2048 and merged.sse_delay == 0.2
    hit = decide(chaos_with(fault("a", throttle=10240, status=None),
                            fault("b", truncate=100, status=None)))
    assert not hit.terminal
    assert hit.shaping == Shaping(throttle=10240, truncate=100)


ONE_ROUTE = """
version: 2
routes:
  - name: api
    listen: 127.0.0.1:0
    upstreams: ["http://127.0.0.1:9"]
"""


# --- config, header faults, reload ---------------------------------------------------------------


def test_sync_config_follows_the_file_and_keeps_api_faults():
    c = chaos_with(fault("from-file"), fault("also-file"))
    c.add(fault("from-api"), "api")
    decide(c)
    c.sync_config([fault("also-file"), fault("new-file")])
    assert set(c.faults) == {"also-file", "new-file", "from-api"}
    assert c.faults["also-file"].index == 1  # unchanged: keeps its counters
    c.sync_config([fault("also-file", status=500)])
    assert set(c.faults) == {"also-file", "from-api"}
    assert c.faults["also-file"].fault.actions["status"] == 500
    assert c.faults["also-file"].index == 0  # changed: a fresh fault


def test_a_finished_config_fault_does_not_rearm_on_an_unrelated_reload():
    once = fault("once", count=1)
    c = chaos_with(once)
    assert decide(c) is not None
    assert decide(c) is None  # used up and gone
    c.sync_config([once])  # the file changed elsewhere; this fault did not
    assert decide(c) is None


def test_parse_fault_header():
    assert parse_fault_header("status=503") == {"name": "x-bridge-fault", "status": 503}
    assert parse_fault_header("status=503; latency=2s") == {
        "name": "x-bridge-fault", "status": 503, "latency": "2s"}
    assert parse_fault_header("latency=300ms, reset") == {
        "name": "x-bridge-fault", "latency": "300ms", "reset": True}
    assert parse_fault_header("truncate=100")["truncate"] == 100
    assert parse_fault_header("truncate=50%")["truncate"] == "50%"


@pytest.mark.parametrize("value", ["status=abc", "explode=1", "", " ; ", "sse_cut_after=x"])
def test_a_bad_fault_header_says_what_is_wrong(value):
    with pytest.raises(ValueError) as e:
        parse_fault_header(value)
    assert str(e.value)


def test_a_header_fault_becomes_a_valid_fault_for_its_route():
    cfg = parse_config(ONE_ROUTE)
    f = parse_fault(parse_fault_header("status=503; latency=300ms") | {"route": "api"}, cfg)
    assert f.actions == {"status": 503, "latency": pytest.approx(0.3)} and f.route == "api"


@pytest.mark.parametrize(("raw", "words"), [
    ({"probability": "140%"}, "probability"),
    ({"preset": "openai-999"}, "preset"),
    ({"route": "nope"}, "nope"),
])
def test_parse_fault_refuses_bad_input_with_a_usage_error(raw, words):
    from bridge_cli.errors import UsageError

    cfg = parse_config(ONE_ROUTE)
    spec = {"name": "f", "route": "api", "status": 503} | raw
    if "preset" in raw:
        del spec["status"]
    with pytest.raises(UsageError) as e:
        parse_fault(spec, cfg)
    assert words in str(e.value)


def test_describe_says_what_a_fault_does_and_where():
    text = describe(fault("x", status=503, probability=0.3, for_=300.0))
    assert "503" in text and "route api" in text and "30%" in text and "300" in text
    assert "every route" in describe(fault(route="*", latency=2.0, jitter=0.5, status=None))
    assert "openai-429" in describe(fault(preset="openai-429", status=None))


def test_snapshot_shows_hits_matches_and_time_left():
    clock = FakeClock()
    c = chaos_with(fault(probability=1.0, count=10, for_=60.0), clock=clock)
    for _ in range(4):
        decide(c)
    clock.now += 15
    snap = c.snapshot()[0]
    assert snap["hits"] == 4 and snap["matched"] == 4
    assert snap["count"] == 10 and snap["remaining_s"] == 45.0
    assert snap["source"] == "config"


def test_faults_are_frozen_so_sync_config_can_compare_them():
    f = fault()
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.actions = {}  # type: ignore[misc]
