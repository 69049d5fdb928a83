"""An offline miss the official SDK doesn't retry, explained field by field: a real bridge
recording a real upstream, then replaying it offline to the openai SDK."""

from __future__ import annotations

import openai
import pytest
from aiohttp import web

from bridge_cli.engine.cache import ReplayMode
from tests.conftest import config_yaml, openai_sdk, route_yaml, wait_for
from tests.test_cache_e2e import COMPLETION, calls, settled

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]


def offline_after_recording(start_bridge, upstream):
    """A bridge replaying, offline, a cassette that holds one chat completion for QUESTION."""
    async def completions(request: web.Request) -> web.Response:
        return web.json_response(COMPLETION)

    upstream.on("/v1/chat/completions", completions)
    cfg = config_yaml(route_yaml("openai", ("up", upstream.url)))
    rec = start_bridge(cfg, replay=ReplayMode(record=True))
    openai_sdk(rec, "openai").chat.completions.create(model="gpt-4o", messages=QUESTION)
    settled(rec)
    rec.stop()
    return start_bridge(cfg, replay=ReplayMode(offline=True), name="offline.yaml")


def misses(b) -> list:
    return [e for e in b.events() if e.kind == "flow" and e.error == "offline_miss"]


def test_the_sdk_asks_once_and_hears_which_field_differs(start_bridge, upstream):
    off = offline_after_recording(start_bridge, upstream)
    sdk = openai_sdk(off, "openai", retries=2)  # the SDK's default: a 504 is retried twice
    asked = [QUESTION[0], {"role": "user", "content": "Something new"}]
    with pytest.raises(openai.APIStatusError) as e:
        sdk.chat.completions.create(model="gpt-4o", messages=asked)
    assert e.value.status_code == 504
    assert e.value.response.headers["x-should-retry"] == "false"
    wait_for(lambda: misses(off), what="the miss's flow event")
    assert len(misses(off)) == 1  # one request: the SDK did not retry
    err = e.value.body
    assert err["type"] == "offline_miss"
    assert 'messages[1].content: "Hello!" → "Something new"' in err["message"]
    assert "messages[0]" not in err["message"]  # what is the same is not listed
    assert err["body_changes"] == [{"path": "messages[1].content", "recorded": '"Hello!"',
                                    "request": '"Something new"'}]
    assert calls(upstream, "/v1/chat/completions") == 1  # only the recording's


def test_a_long_body_difference_is_short_and_capped(start_bridge, upstream):
    off = offline_after_recording(start_bridge, upstream)
    long_prompt = "Tell me about " + "the sea " * 100
    asked = [{"role": "system", "content": "Be long."}, {"role": "user", "content": long_prompt},
             *({"role": "user", "content": f"and {i}"} for i in range(12))]
    with pytest.raises(openai.APIStatusError) as e:
        openai_sdk(off, "openai").chat.completions.create(model="gpt-4o", messages=asked,
                                                           temperature=0.5)
    message = e.value.body["message"]
    assert 'messages[0].content: "Be brief." → "Be long."' in message
    assert message.count("→") == 1 + 10 and "; and 17 more" in message  # legend, ten, a count
    assert len(message) < 1500  # values are cut, not pasted whole
    assert "the sea the sea the sea the sea the sea the sea the sea" not in message
