"""The demo's app: chat completion calls through bridge at a steady rate, as an app sends them.

A share of the calls repeats a few popular questions (the cache answers those after the
first), the rest are new questions (priced, so spend rises); some are streamed. Arrivals
are Poisson at `rate` a second, drawn from the seed.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import httpx

from bridge_cli.demo.scenario import MODEL

POPULAR_SHARE = 0.4  # calls that repeat a popular question: cache hits after the first
STREAM_SHARE = 0.25
MAX_IN_FLIGHT = 32  # beyond this the generator waits: a stuck bridge can't pile up tasks
MAX_TOKENS = 300
CONTEXT = (  # the app's system prompt: ~600 tokens of retrieved context, as a RAG app sends
    "You are the support assistant of a developer tools company. Answer briefly and "
    "cite the relevant section. " + " ".join(
        f"Section {i}: the proxy routes each request to its upstream, retries transient "
        f"failures with exponential backoff and jitter, opens a circuit breaker after "
        f"repeated failures, caches identical requests, prices every call from its usage, "
        f"and reports when an API changes shape." for i in range(1, 12)))
POPULAR = (
    "What does a circuit breaker do?",
    "How do I set a budget?",
    "Why was my request answered from the cache?",
    "What is schema drift?",
    "How do retries and fallback work together?",
    "What does a 402 from the proxy mean?",
)
TOPICS = ("timeouts", "streaming", "rate limits", "fallback models", "the ledger",
          "half-open breakers", "cache keys", "fault injection", "cassettes", "pricing")


class Traffic:
    """Sends calls to `base_url` (bridge's route) until stopped; counts what came back."""

    def __init__(self, base_url: str, rate: float, rng: random.Random) -> None:
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.rate = rate
        self.rng = rng
        self.sent = 0
        self.outcomes: Counter[str] = Counter()  # "200", "402", ..., "error"
        self._tasks: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event, grace: float = 3.0) -> None:
        """Send until `stop` is set, then give the calls in flight `grace` seconds."""
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(trust_env=False, timeout=20.0,
                                     headers={"authorization": "Bearer sk-demo-not-a-key"},
                                     limits=httpx.Limits(max_connections=MAX_IN_FLIGHT)) as c:
            next_at = loop.time()
            while not stop.is_set():
                next_at += self.rng.expovariate(self.rate)
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
                    break
                except TimeoutError:
                    pass
                if len(self._tasks) >= MAX_IN_FLIGHT:
                    continue
                task = asyncio.create_task(self._call(c, self._body()))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await self._finish(grace)

    async def _finish(self, grace: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _body(self) -> dict:
        self.sent += 1
        if self.rng.random() < POPULAR_SHARE:
            question = self.rng.choice(POPULAR)
        else:
            question = (f"Question {self.sent}: how should I configure "
                        f"{self.rng.choice(TOPICS)} for a service with "
                        f"{self.rng.randint(2, 500)} requests a minute?")
        body = {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0,
                "messages": [{"role": "system", "content": CONTEXT},
                             {"role": "user", "content": question}]}
        if self.rng.random() < STREAM_SHARE:
            body["stream"] = True
        return body

    async def _call(self, client: httpx.AsyncClient, body: dict) -> None:
        try:
            if body.get("stream"):
                async with client.stream("POST", self.url, json=body) as resp:
                    async for _ in resp.aiter_bytes():
                        pass  # an app reads the stream to its end
            else:
                resp = await client.post(self.url, json=body)
            self.outcomes[str(resp.status_code)] += 1
        except httpx.HTTPError:
            self.outcomes["error"] += 1
