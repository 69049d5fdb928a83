"""Real providers' error answers, for the `preset` fault kind: status, headers and body as
the provider sends them, so SDKs parse them as they would the real thing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

MAX_MODEL = 200  # characters of a request's model quoted in an error message


@dataclass(frozen=True)
class Preset:
    """One ready-made error answer; `quoting` makes its body for a request that names a
    model, when the provider's message names it (`body` is the one for any other)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    quoting: Callable[[str], bytes] | None = None

    def body_for(self, model: str | None) -> bytes:
        """The body for a request that names `model` (None: names none)."""
        if model is None or self.quoting is None:
            return self.body
        return self.quoting(" ".join(model.split())[:MAX_MODEL] or "gpt-4o")


def _json(obj) -> bytes:
    """Indented JSON with a final newline."""
    return json.dumps(obj, indent=2).encode() + b"\n"


def _openai_429(model: str) -> bytes:
    return _json({"error": {
        "message": f"Rate limit reached for {model} in organization org-bridgechaos on requests "
                   "per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. "
                   "Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}})


# Real providers' error answers, in shape and headers, so SDKs parse them as they would
# the real thing (the openai SDK raises RateLimitError for openai-429).
PRESETS: dict[str, Preset] = {
    "openai-429": Preset(429, (
        ("content-type", "application/json"),
        ("retry-after", "1"),
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "120ms"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "1s"),
        ("x-request-id", "req_bridge_chaos"),
    ), _openai_429("gpt-4o"), _openai_429),
    "openai-500": Preset(500, (
        ("content-type", "application/json"),
        ("x-request-id", "req_bridge_chaos"),
    ), _json({"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": None, "code": None}})),
    "anthropic-429": Preset(429, (
        ("content-type", "application/json"),
        ("retry-after", "1"),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:01Z"),
        ("request-id", "req_bridgechaos"),
        ("x-should-retry", "true"),
    ), json.dumps({"type": "error", "error": {
        "type": "rate_limit_error",
        "message": "Number of request tokens has exceeded your per-minute rate limit "
                   "(https://docs.anthropic.com/en/api/rate-limits); see the response headers "
                   "for current usage. Please reduce the prompt length or the maximum tokens "
                   "requested, or try again later."}}).encode()),
    "anthropic-529-overloaded": Preset(529, (
        ("content-type", "application/json"),
        ("request-id", "req_bridgechaos"),
        ("x-should-retry", "true"),
    ), json.dumps({"type": "error", "error": {"type": "overloaded_error",
                                              "message": "Overloaded"}}).encode()),
    "github-403-rate-limit": Preset(403, (
        ("content-type", "application/json; charset=utf-8"),
        ("x-ratelimit-limit", "60"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1767225600"),
        ("x-ratelimit-used", "60"),
        ("x-ratelimit-resource", "core"),
        ("x-github-media-type", "github.v3; format=json"),
    ), json.dumps({
        "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: "
                   "Authenticated requests get a higher rate limit. Check out the documentation "
                   "for more details.)",
        "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api"
                             "#rate-limiting"}).encode()),
}
