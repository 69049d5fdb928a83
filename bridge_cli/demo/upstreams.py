"""The demo's upstreams: OpenAI-style chat completions servers on 127.0.0.1.

Each answers `POST /v1/chat/completions` as OpenAI does (a completion, or SSE chunks with
the usage chunk when the request asks for it), with usage counted from the text, so bridge
prices it as a real call. A `Behaviour` makes one slow now and then, flaky, down in
scheduled outages, or change its answer's shape at a given second (drift).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

MODEL_VERSION = "gpt-4o-2024-08-06"  # what OpenAI's answers name for a request for gpt-4o
SENTENCES = (
    "Retries with backoff hide most transient failures from the caller.",
    "A circuit breaker stops sending traffic to an upstream that keeps failing.",
    "Caching identical prompts saves both latency and money.",
    "A budget reserves the worst case before a request leaves the machine.",
    "Streaming lets the first tokens reach the user while the rest is generated.",
    "Schema drift is easiest to fix on the day it starts.",
    "Timeouts should bound the wait for the first byte and every idle gap.",
    "A fallback model keeps the product answering when the primary is down.",
    "Usage reported by the provider is the only reliable basis for cost.",
    "Fault injection shows how an app copes before production does.",
    "Idempotent requests can be retried safely; others need care.",
    "Half-open breakers let a few trial calls decide whether to close.",
)
ERRORS = {
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}


@dataclass(frozen=True)
class Outages:
    """Down `down` seconds every `every` seconds, the first outage `first` seconds in."""

    first: float
    down: float
    every: float

    def down_at(self, t: float) -> bool:
        """Whether the upstream is down `t` seconds after it started."""
        return t >= self.first and (t - self.first) % self.every < self.down


@dataclass(frozen=True)
class Behaviour:
    """How an upstream misbehaves: shares are fractions, times seconds from its start."""

    slow_share: float = 0.0  # answers that take `slow` seconds more
    slow: tuple[float, float] = (0.8, 2.0)
    fail_share: float = 0.0  # answers that are a 500
    outages: Outages | None = None  # windows answered with 503
    drift_at: float | None = None  # from then on: `created` has ms, `service_tier` is new


@dataclass
class Counts:
    """What an upstream answered: calls, and those it failed (5xx)."""

    calls: int = 0
    failed: int = 0


class FakeLLM:
    """One OpenAI-compatible chat completions server on a loopback port."""

    def __init__(self, name: str, behaviour: Behaviour, rng: random.Random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.behaviour = behaviour
        self.rng = rng
        self.clock = clock
        self.counts = Counts()
        self.port = 0
        self._started = 0.0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started = self.clock()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _elapsed(self) -> float:
        return self.clock() - self._started

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": MODEL_VERSION, "object": "model", "created": 1722902400, "owned_by": "system"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.counts.calls += 1
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
            prompt = "\n".join(str(m.get("content", "")) for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "We could not parse the JSON body of your request.",
                          "invalid_request_error")
        failure = self._failure()
        if failure:
            self.counts.failed += 1
            await asyncio.sleep(self.rng.uniform(0.02, 0.08))
            return _error(failure, ERRORS[failure], "server_error")
        answer = _answer_for(prompt, int(body.get("max_tokens") or 4096))
        usage = {"prompt_tokens": _tokens(prompt) + 7 * len(messages),
                 "completion_tokens": _tokens(answer), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        await asyncio.sleep(self._first_token_delay())
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
            await resp.prepare(request)
            with contextlib.suppress(ConnectionResetError):  # the caller went away: fine
                await self._stream(resp, answer, usage if with_usage else None)
            return resp
        return web.json_response(self._completion(answer, usage))

    def _failure(self) -> int | None:
        b = self.behaviour
        if b.outages is not None and b.outages.down_at(self._elapsed()):
            return 503
        if b.fail_share and self.rng.random() < b.fail_share:
            return 500
        return None

    def _first_token_delay(self) -> float:
        delay = self.rng.uniform(0.05, 0.25)
        b = self.behaviour
        if b.slow_share and self.rng.random() < b.slow_share:
            delay += self.rng.uniform(*b.slow)
        return delay

    def _head(self, kind: str) -> dict:
        """The fields every answer and chunk starts with; after `drift_at`, the new shape."""
        now = time.time()
        drifted = self.behaviour.drift_at is not None and self._elapsed() >= self.behaviour.drift_at
        head = {"id": "chatcmpl-" + secrets.token_hex(12), "object": kind,
                "created": round(now, 3) if drifted else int(now),  # integer → number
                "model": MODEL_VERSION, "system_fingerprint": "fp_7c3e0a1b"}
        if drifted:
            head["service_tier"] = "default"
        return head

    def _completion(self, answer: str, usage: dict) -> dict:
        return {**self._head("chat.completion"), "choices": [{
            "index": 0, "message": {"role": "assistant", "content": answer, "refusal": None},
            "logprobs": None, "finish_reason": "stop"}], "usage": usage}

    async def _stream(self, resp: web.StreamResponse, answer: str, usage: dict | None) -> None:
        extra = {"usage": None} if usage is not None else {}
        words = answer.split(" ")
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": " ".join(words[i:i + 3]) + " "} for i in range(0, len(words), 3)]
        # Two departures from OpenAI's chunks, so the demo's drift findings are the ones it
        # schedules: the last delta keeps `content` (OpenAI's is `{}`), and every chunk has
        # its own id (OpenAI's share one, which bridge's learner, seeing 20 strings with
        # few values, takes for an enum and reports every new stream's id as a new value).
        for delta in deltas:
            await _event(resp, {**self._head("chat.completion.chunk"), "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], **extra})
            await asyncio.sleep(self.rng.uniform(0.005, 0.02))
        await _event(resp, {**self._head("chat.completion.chunk"), "choices": [
            {"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": "stop"}],
            **extra})
        if usage is not None:  # OpenAI's last chunk when the request asks for usage
            await _event(resp, {**self._head("chat.completion.chunk"), "choices": [],
                                "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()


async def _event(resp: web.StreamResponse, data: dict) -> None:
    await resp.write(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None,
                                        "code": None}}, status=status)


def _tokens(text: str) -> int:
    """About what OpenAI's tokenizer counts for English: a token per 4 characters."""
    return max(1, len(text) // 4)


def _answer_for(prompt: str, max_tokens: int) -> str:
    """The same answer for the same prompt (as at temperature 0), cut at `max_tokens`."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    text = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 12)))
    return text[: max_tokens * 4]
