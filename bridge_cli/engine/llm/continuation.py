"""Continuing a broken stream: who is asked (the plan), what they are asked (a prefill),
and how their answer is spliced into the stream the client already has."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

from bridge_cli.config.model import Upstream
from bridge_cli.engine.llm.sse import data_event, read_event
from bridge_cli.engine.llm.stream import LlmStream

PREFILL, RESTART = "prefill", "restart"


class Mismatch(Exception):
    """A restarted answer does not begin with the text the client already has."""


def recovery_plan(order: Sequence[Upstream], cut: Upstream, cut_tries_left: bool,
                  allowed=lambda u: True) -> list[tuple[Upstream, str]]:
    """The continuation tries, in order: the next upstream with a prefill if it accepts
    one; the cut upstream with a prefill if it does and has tries left; the next upstream
    again, restarted without a prefill (kept only if it repeats what was sent)."""
    names = [u.name for u in order]
    later = order[names.index(cut.name) + 1:] if cut.name in names else ()
    nxt = next((u for u in later if allowed(u)), None)
    plan: list[tuple[Upstream, str]] = []
    if nxt is not None and nxt.prefill:
        plan.append((nxt, PREFILL))
    if cut.prefill and cut_tries_left and allowed(cut):
        plan.append((cut, PREFILL))
    if nxt is not None:
        plan.append((nxt, RESTART))
    return plan


def prefill_text(provider: str, text: str) -> str:
    """The prefill a provider accepts: Anthropic refuses trailing whitespace in it."""
    return text.rstrip() if provider == "anthropic" else text


def continuation_body(provider: str, body: dict, text: str, mode: str) -> dict | None:
    """The request that continues the answer: the client's request, plus the partial
    answer as a trailing assistant message (PREFILL); None if the body has no messages."""
    if not isinstance(body.get("messages"), list):
        return None
    if mode == RESTART or not text:
        return body
    out = copy.copy(body)
    out["messages"] = [*body["messages"],
                       {"role": "assistant", "content": prefill_text(provider, text)}]
    return out


class Splicer:
    """Rewrites a continuation's events so the client's stream reads as one answer: the
    original response id, no second start, the text the client has not seen yet."""

    def __init__(self, original: LlmStream, mode: str) -> None:
        self.orig = original
        self.provider = original.provider
        sent = original.text
        if mode == RESTART:
            self.skip = sent  # the restart must repeat this; it is not sent again
        else:  # what the prefill left out (trailing whitespace) may come back: sent already
            self.skip = sent[len(prefill_text(self.provider, sent)):]
        self.strict = mode == RESTART
        self.open_block = original.open_block  # the tracker moves on as events pass it
        self.next_block = original.blocks
        self.block_map: dict[int, int] = {}

    def finish(self) -> None:
        """The continuation ended: a restart that never repeated all of the text is wrong."""
        if self.strict and self.skip:
            raise Mismatch("the restarted answer was shorter than the text already sent")

    def event(self, raw: bytes) -> bytes:
        """One continuation event, rewritten ('' to drop it); Mismatch on a wrong restart."""
        ev = read_event(raw)
        if ev.data is None or ev.data.strip() == "[DONE]":
            return raw
        try:
            doc = json.loads(ev.data)
        except ValueError:
            return b""
        if not isinstance(doc, dict):
            return b""
        if self.provider == "anthropic":
            return self._anthropic(ev.name or str(doc.get("type", "")), doc)
        return self._openai(doc)

    def _take(self, text: str) -> str:
        """The part of `text` the client has not been sent yet."""
        if not self.skip:
            return text
        n = min(len(self.skip), len(text))
        if text[:n] != self.skip[:n]:
            if self.strict:
                raise Mismatch("the restarted answer began differently")
            self.skip = ""
            return text
        self.skip = self.skip[n:]
        return text[n:]

    def _openai(self, doc: dict) -> bytes:
        if self.orig.id:
            doc["id"] = self.orig.id
        if self.orig.created is not None:
            doc["created"] = self.orig.created
        for choice in doc.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            delta.pop("role", None)  # the client's stream already said who speaks
            if isinstance(delta.get("content"), str):
                delta["content"] = self._take(delta["content"])
        return data_event(json.dumps(doc, separators=(",", ":")))

    def _anthropic(self, kind: str, doc: dict) -> bytes:
        if kind == "message_start":
            return b""  # the client's stream has its start (and its id)
        index = doc.get("index")
        if kind == "content_block_start" and isinstance(index, int):
            if self.open_block is not None and not self.block_map:
                self.block_map[index] = self.open_block
                return b""  # continue the block the client has open
            self.block_map[index] = self.next_block
            self.next_block += 1
        if isinstance(index, int) and index in self.block_map:
            doc["index"] = self.block_map[index]
        if kind == "content_block_delta":
            delta = doc.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("text"), str):
                delta["text"] = self._take(delta["text"])
        return data_event(json.dumps(doc, separators=(",", ":")), kind)
