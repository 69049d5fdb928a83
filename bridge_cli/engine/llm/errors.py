"""A provider's error answer read by meaning, not only by status (docs/llm-failover.md)."""

from __future__ import annotations

from bridge_cli.common.jsondoc import json_object

CONTEXT_LENGTH = "context_length"  # the prompt is too long for this model: a larger one may do
CONTENT_FILTER = "content_filter"  # the provider refused the content: asking again won't help
OVERLOADED = "overloaded"  # the provider is busy: another upstream now beats waiting here
RATE_LIMITED = "rate_limited"  # 429: the ordinary retry rules (Retry-After) apply

_CONTEXT_WORDS = ("context_length_exceeded", "context length", "context window",
                  "prompt is too long", "too many tokens", "maximum context")
_FILTER_WORDS = ("content_policy_violation", "content_filter", "content policy",
                 "content management policy", "safety system", "responsible ai")
_OVERLOADED_WORDS = ("overloaded", "server_overloaded", "engine_overloaded")


def error_meaning(provider: str, status: int, body: bytes | None) -> str | None:
    """What a failed answer of `provider` (openai | anthropic) means, or None."""
    if status < 400:
        return None
    err = _error_object(body)
    words = " ".join(str(err.get(k, "")) for k in ("code", "type", "message")).lower()
    if status == 429 and "overloaded" not in words:
        return RATE_LIMITED
    if status == 529 or any(w in words for w in _OVERLOADED_WORDS):
        return OVERLOADED
    if status in (400, 413, 422) and any(w in words for w in _CONTEXT_WORDS):
        return CONTEXT_LENGTH
    if status in (400, 403, 422) and any(w in words for w in _FILTER_WORDS):
        return CONTENT_FILTER
    if status == 503:
        return OVERLOADED
    return None


def _error_object(body: bytes | None) -> dict:
    """The `error` object of an OpenAI- or Anthropic-shaped error body ({} if none)."""
    doc = json_object(body or b"")
    if doc is None:
        return {}
    err = doc.get("error")
    if isinstance(err, dict):
        return err
    if isinstance(err, str):
        return {"message": err}
    return {}
