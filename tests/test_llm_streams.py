"""LLM-aware failover (issue 24), each failure against a raw upstream that misbehaves
exactly so, driven by the official openai SDK with stream=True and max_retries=0: the
client gets the whole answer or a clear error in bounded time, and the upstream logs show
no hammering."""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import LoopThread, config_yaml, flow_event, openai_sdk, tries
from tests.llm_upstream import ANSWER, LlmServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def llm():
    """`llm(script, **options)` starts a misbehaving upstream; all stop at the end."""
    lt = LoopThread("llm-upstreams")
    servers: list[LlmServer] = []

    def make(*script: str, **options) -> LlmServer:
        s = LlmServer(script=list(script) or ["ok"], **options)
        lt.run(s.start())
        servers.append(s)
        return s

    yield make
    for s in servers:
        lt.run(s.stop())
    lt.close()


def llm_route(*ups, extra: str = "", llm: str = "openai") -> str:
    """A route `api` with `llm:` over upstreams given as (name, server, more YAML keys)."""
    lines = ["  - name: api", "    listen: 127.0.0.1:0", f"    llm: {llm}", "    upstreams:"]
    for name, server, *more in ups:
        keys = f", {more[0]}" if more else ""
        lines.append(f'      - {{name: {name}, url: "{server.url}"{keys}}}')
    lines += ["    " + line for line in extra.strip("\n").splitlines()]
    return config_yaml("\n".join(lines) + "\n")


RETRY = "retry: {attempts: 2, on: [429, 502, 503, 504, connect, reset, timeout], methods: [POST], backoff: {initial: 10ms, max: 20ms}}"


def ask_stream(b, **extra):
    """Stream one chat completion through bridge: (text, finish reasons, ids, chunks)."""
    sdk = openai_sdk(b)
    stream = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True,
        timeout=20, **extra)
    text, finishes, ids, chunks = "", [], set(), 0
    for chunk in stream:
        chunks += 1
        ids.add(chunk.id)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return text, finishes, ids, stream.response


def test_a_stream_cut_midway_is_continued_by_the_fallback_with_a_prefill(start_bridge, llm):
    primary, backup = llm("cut:6"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup), extra=RETRY))
    t0 = time.monotonic()
    text, finishes, ids, response = ask_stream(b)
    assert time.monotonic() - t0 < 10
    assert text == ANSWER  # whole, byte for byte, nothing repeated
    assert finishes == ["stop"] and len(ids) == 1
    # the fallback got the words the client already had as an assistant prefill
    prefill = backup.log[0].body["messages"][-1]
    assert prefill["role"] == "assistant" and ANSWER.startswith(prefill["content"])
    assert len(prefill["content"].split()) == 6
    assert (primary.count(), backup.count()) == (1, 1)
    event = flow_event(b, rid=response.headers["x-bridge-request-id"])
    assert event.error is None
    assert ("backup", "prefill:ok") in tries(event)


def test_fallback_refusing_prefills_sends_the_continuation_to_the_cut_upstream(start_bridge,
                                                                              llm):
    primary, backup = llm("cut:4", "ok"), llm("ok", prefill=False)
    b = start_bridge(llm_route(("primary", primary), ("backup", backup, "prefill: false"),
                               extra=RETRY))
    text, finishes, ids, _ = ask_stream(b)
    assert text == ANSWER and finishes == ["stop"] and len(ids) == 1
    assert primary.count() == 2 and backup.count() == 0
    assert primary.log[1].body["messages"][-1]["role"] == "assistant"


def test_a_restart_without_prefill_is_kept_only_when_it_repeats_what_was_sent(start_bridge, llm):
    primary, same = llm("cut:5"), llm("ok", prefill=False)
    b = start_bridge(llm_route(("primary", primary, "prefill: false"),
                               ("backup", same, "prefill: false"), extra=RETRY))
    text, finishes, _, _ = ask_stream(b)
    assert text == ANSWER and finishes == ["stop"]
    assert same.log[0].body["messages"][-1]["role"] == "user"  # restarted, no prefill


def test_a_restart_that_answers_differently_ends_with_an_in_band_error(start_bridge, llm):
    primary = llm("cut:5")
    other = llm("ok", prefill=False, answer="Something else entirely. ")
    b = start_bridge(llm_route(("primary", primary, "prefill: false"),
                               ("backup", other, "prefill: false"), extra=RETRY))
    with pytest.raises(openai.APIError) as e:
        ask_stream(b)
    assert "upstream stream broke" in str(e.value) or "cut" in str(e.value).lower()
    assert "prefill" not in str(e.value)  # the original failure, not a refusal


def test_a_stall_midway_is_caught_by_idle_and_continued(start_bridge, llm):
    primary, backup = llm("stall:3"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup),
                               extra=RETRY + "\ntimeout: {total: 30s, idle: 500ms}"))
    t0 = time.monotonic()
    text, finishes, _, _ = ask_stream(b)
    assert text == ANSWER and finishes == ["stop"]
    assert time.monotonic() - t0 < 5  # the idle bound, not the 30 s total


def test_first_token_moves_a_silent_upstream_to_the_next_once(start_bridge, llm):
    primary, backup = llm("silent"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup),
                               extra=RETRY.replace("attempts: 2", "attempts: 3")
                               + "\ntimeout: {total: 30s, first_token: 700ms}"))
    t0 = time.monotonic()
    text, finishes, _, response = ask_stream(b)
    assert text == ANSWER and finishes == ["stop"]
    assert time.monotonic() - t0 < 5
    assert primary.count() == 1  # never a second try on the silent one
    event = flow_event(b, rid=response.headers["x-bridge-request-id"])
    assert tries(event) == [("primary", "first_token"), ("backup", "ok")]


def test_headers_without_a_first_event_are_held_back_and_the_next_answer_delivered(
        start_bridge, llm):
    primary, backup = llm("headers_only"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup),
                               extra=RETRY + "\ntimeout: {total: 30s, first_token: 700ms}"))
    text, finishes, ids, response = ask_stream(b)
    assert text == ANSWER and len(ids) == 1
    assert response.headers["x-bridge-upstream"] == "backup"


def test_first_token_on_the_last_upstream_is_a_504(start_bridge, llm):
    only = llm("silent")
    b = start_bridge(llm_route(("only", only),
                               extra=RETRY + "\ntimeout: {total: 30s, first_token: 500ms}"))
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        ask_stream(b)
    assert e.value.status_code == 504
    assert "upstream_timeout" in str(e.value.body)
    assert time.monotonic() - t0 < 5 and only.count() == 1


def test_a_reset_before_headers_is_retried_then_falls_back(start_bridge, llm):
    primary, backup = llm("reset"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup), extra=RETRY))
    text, _, _, _ = ask_stream(b)
    assert text == ANSWER
    assert primary.count() == 2 and backup.count() == 1  # its tries, then the next
    assert all(g >= 0.005 for g in primary.gaps())  # with backoff between them


def test_a_stream_without_its_terminator_is_finalised_at_once(start_bridge, llm):
    only = llm("no_done")
    b = start_bridge(llm_route(("only", only), extra="timeout: {total: 30s, idle: 20s}"))
    t0 = time.monotonic()
    text, finishes, _, response = ask_stream(b, stream_options={"include_usage": True})
    assert text == ANSWER and finishes == ["stop"]
    assert time.monotonic() - t0 < 5  # not the 20 s idle bound
    assert flow_event(b, rid=response.headers["x-bridge-request-id"]).error is None


def test_an_end_before_the_finish_event_is_never_passed_off_as_success(start_bridge, llm):
    only = llm("no_finish:4")
    b = start_bridge(llm_route(("only", only), extra="stream_recovery: off"))
    with pytest.raises(openai.APIError) as e:
        ask_stream(b)
    assert "before its finish event" in str(e.value)


def test_malformed_events_are_dropped_and_the_proxy_stays_healthy(start_bridge, llm):
    only = llm("malformed", "ok")
    b = start_bridge(llm_route(("only", only)))
    text, finishes, _, _ = ask_stream(b)
    assert text == ANSWER and finishes == ["stop"]
    assert ask_stream(b)[0] == ANSWER


def test_malformed_events_pass_through_when_repair_is_off(start_bridge, llm):
    only = llm("malformed", "ok")
    b = start_bridge(llm_route(("only", only), extra="stream_repair: false"))
    with pytest.raises(Exception):  # noqa: B017 - the SDK chokes on what the upstream sent
        ask_stream(b)
    assert ask_stream(b)[0] == ANSWER  # and bridge is fine


def ask_whole(b):
    sdk = openai_sdk(b)
    return sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], timeout=20)


def test_context_length_goes_to_a_larger_window_and_skips_smaller_ones(start_bridge, llm):
    small = llm("error:400:context_length_exceeded")
    smaller = llm("ok")
    large = llm("ok", model="gpt-4o-large")
    b = start_bridge(llm_route(("small", small, "context_window: 8000"),
                               ("smaller", smaller, "context_window: 4000"),
                               ("large", large, "context_window: 128000"), extra=RETRY))
    answer = ask_whole(b)
    assert answer.model == "gpt-4o-large"
    assert (small.count(), smaller.count(), large.count()) == (1, 0, 1)


def test_context_length_with_no_larger_model_returns_the_original_error(start_bridge, llm):
    small = llm("error:400:context_length_exceeded")
    same = llm("ok")
    b = start_bridge(llm_route(("small", small, "context_window: 8000"),
                               ("same", same, "context_window: 8000"), extra=RETRY))
    with pytest.raises(openai.BadRequestError) as e:
        ask_whole(b)
    assert e.value.code == "context_length_exceeded"
    assert (small.count(), same.count()) == (1, 0)


def test_a_content_filter_refusal_is_neither_retried_nor_sent_elsewhere(start_bridge, llm):
    primary, backup = llm("error:400:content_policy_violation"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup), extra=RETRY))
    with pytest.raises(openai.BadRequestError) as e:
        ask_whole(b)
    assert e.value.code == "content_policy_violation"  # the provider's reason, unchanged
    assert (primary.count(), backup.count()) == (1, 0)


def test_a_route_may_ask_content_filter_refusals_to_fall_back(start_bridge, llm):
    primary, backup = llm("error:400:content_policy_violation"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup),
                               extra=RETRY.replace("on: [", "on: [content_filter, ")))
    assert ask_whole(b).choices[0].message.content == ANSWER
    assert (primary.count(), backup.count()) == (1, 1)


def test_an_overloaded_provider_fails_over_at_once(start_bridge, llm):
    primary, backup = llm("error:529:overloaded_error"), llm("ok")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup), extra=RETRY))
    assert ask_whole(b).choices[0].message.content == ANSWER
    assert (primary.count(), backup.count()) == (1, 1)  # not a second try on the busy one


def test_a_primary_down_then_back_is_skipped_by_its_breaker_and_gets_traffic_again(
        start_bridge, llm):
    primary, backup = llm("silent"), llm("ok")
    b = start_bridge(llm_route(
        ("primary", primary), ("backup", backup),
        extra=RETRY + "\ntimeout: {total: 30s, first_token: 400ms}"
        "\nbreaker: {failure_rate: 50%, window: 4, min_calls: 2, open_for: 1s}"))
    took = []
    for _ in range(8):  # the outage
        t0 = time.monotonic()
        text, _, _, response = ask_stream(b)
        took.append(time.monotonic() - t0)
        assert text == ANSWER and response.headers["x-bridge-upstream"] == "backup"
    assert primary.count() <= 3  # the breaker spared it (and the client its timeout)
    assert sorted(took)[4] < 0.3  # most requests never waited for the silent primary
    primary.script = ["ok"]  # it recovers
    recovered_at, served = time.monotonic(), None
    while time.monotonic() - recovered_at < 10:
        _, _, _, response = ask_stream(b)
        if response.headers["x-bridge-upstream"] == "primary":
            served = time.monotonic() - recovered_at
            break
        time.sleep(0.1)
    assert served is not None and served < 5  # a half-open probe found it back
    assert ask_stream(b)[3].headers["x-bridge-upstream"] == "primary"


def anthropic_stream(b):
    import anthropic

    sdk = anthropic.Anthropic(base_url=b.url("api"), api_key="sk-ant-test", max_retries=0)
    text, stops, starts = "", [], 0
    for event in sdk.messages.create(model="claude-3-5-haiku-latest", max_tokens=100,
                                     messages=[{"role": "user", "content": "hello"}],
                                     stream=True, timeout=20):
        if event.type == "message_start":
            starts += 1
        elif event.type == "content_block_delta":
            text += event.delta.text
        elif event.type == "message_delta":
            stops.append(event.delta.stop_reason)
    return text, stops, starts


def test_an_anthropic_stream_cut_midway_is_continued_as_one_message(start_bridge, llm):
    primary = llm("cut:5", provider="anthropic", model="claude-3-5-haiku-latest")
    backup = llm("ok", provider="anthropic", model="claude-3-5-haiku-latest")
    b = start_bridge(llm_route(("primary", primary), ("backup", backup), extra=RETRY,
                               llm="anthropic"))
    text, stops, starts = anthropic_stream(b)
    assert text == ANSWER and stops == ["end_turn"] and starts == 1
    prefill = backup.log[0].body["messages"][-1]["content"]
    assert prefill == prefill.rstrip() and ANSWER.startswith(prefill)  # no trailing space


def test_an_anthropic_stream_that_cannot_be_continued_ends_with_its_error_event(start_bridge,
                                                                               llm):
    import anthropic

    only = llm("cut:5", provider="anthropic")
    b = start_bridge(llm_route(("only", only), extra=RETRY, llm="anthropic"))
    with pytest.raises(anthropic.APIError) as e:
        anthropic_stream(b)
    assert "upstream stream broke" in str(e.value)
