"""One LLM answer stream, event by event: what the client has been sent so far, whether it
ended properly, and which events are malformed (docs/llm-failover.md, "Streams")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bridge_cli.common.jsondoc import json_value
from bridge_cli.engine.llm.sse import data_event, read_event

PASS, DROP, FAILED = "pass", "drop", "failed"


@dataclass(frozen=True)
class Verdict:
    """What to do with one upstream event: pass it on, drop it (repaired), or treat the
    stream as failed here (the upstream sent an in-band error)."""

    action: str
    message: str = ""


@dataclass
class LlmStream:
    """The state of one streamed answer, as the client has received it."""

    provider: str  # openai | anthropic
    repair: bool = True  # drop malformed events instead of passing them on
    id: str | None = None
    model: str | None = None
    created: int | None = None
    parts: list[str] = field(default_factory=list)  # the assistant text sent so far
    open_block: int | None = None  # anthropic: index of the text block still open
    blocks: int = 0  # anthropic: content blocks started
    finished: bool = False  # the finish event arrived (finish_reason / stop_reason)
    done: bool = False  # the terminator arrived ([DONE] / message_stop)
    chat: bool = False  # openai: chat.completion.chunk events (the shape bridge continues)
    unusual: bool = False  # tool calls, several choices, another API: no continuation
    dropped: int = 0  # malformed events removed

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def can_continue(self) -> bool:
        """Can a prefill carry this answer on? Only plain text of one choice, not ended."""
        shaped = self.chat if self.provider == "openai" else self.id is not None
        return shaped and not self.unusual and not self.finished

    @property
    def ended(self) -> bool:
        return self.done

    def accept(self, raw: bytes) -> Verdict:
        """Read one whole event on its way to the client."""
        ev = read_event(raw)
        if ev.data is None:
            return Verdict(PASS)  # a comment or keep-alive
        if self.provider == "openai" and ev.data.strip() == "[DONE]":
            self.done = True
            return Verdict(PASS)
        doc = json_value(ev.data)
        if not isinstance(doc, dict):
            if not self.repair:
                return Verdict(PASS)
            self.dropped += 1
            return Verdict(DROP, "not a JSON object")
        if self.provider == "anthropic":
            return self._anthropic(ev.name or str(doc.get("type", "")), doc)
        return self._openai(ev.name, doc)

    def _openai(self, name: str, doc: dict) -> Verdict:
        if "error" in doc and "choices" not in doc:
            return Verdict(FAILED, _message(doc["error"]))
        if name.startswith("response.") or doc.get("type", "").startswith("response."):
            self.unusual = True  # the Responses API: passed on, not continued
            if doc.get("type") in ("response.completed", "response.incomplete"):
                self.finished = self.done = True
            return Verdict(PASS)
        choices = doc.get("choices")
        if not isinstance(choices, list):
            return Verdict(PASS)  # e.g. the usage-only chunk
        self.chat = True
        self.id = self.id or _str(doc.get("id"))
        self.model = self.model or _str(doc.get("model"))
        self.created = self.created or (doc.get("created") if isinstance(doc.get("created"), int)
                                        else None)
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:
                self.unusual = True
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                if delta.get("tool_calls") or delta.get("function_call"):
                    self.unusual = True
                if isinstance(delta.get("content"), str):
                    self.parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finished = True
        return Verdict(PASS)

    def _anthropic(self, kind: str, doc: dict) -> Verdict:
        if kind == "error":
            return Verdict(FAILED, _message(doc.get("error")))
        if kind == "message_start":
            msg = doc.get("message") if isinstance(doc.get("message"), dict) else {}
            self.id, self.model = _str(msg.get("id")), _str(msg.get("model"))
        elif kind == "content_block_start":
            block = doc.get("content_block") if isinstance(doc.get("content_block"), dict) else {}
            self.blocks += 1
            if block.get("type") != "text":
                self.unusual = True
            self.open_block = doc.get("index") if isinstance(doc.get("index"), int) else None
            if isinstance(block.get("text"), str):
                self.parts.append(block["text"])
        elif kind == "content_block_delta":
            delta = doc.get("delta") if isinstance(doc.get("delta"), dict) else {}
            if isinstance(delta.get("text"), str):
                self.parts.append(delta["text"])
            elif delta.get("type") not in (None, "text_delta"):
                self.unusual = True
        elif kind == "content_block_stop":
            self.open_block = None
        elif kind == "message_delta":
            delta = doc.get("delta") if isinstance(doc.get("delta"), dict) else {}
            self.finished = self.finished or bool(delta.get("stop_reason"))
        elif kind == "message_stop":
            self.finished = self.done = True
        return Verdict(PASS)

    def terminator(self) -> bytes:
        """The end the upstream left out, once the answer itself had finished."""
        if self.provider == "anthropic":
            return data_event(json.dumps({"type": "message_stop"}), "message_stop")
        return b"data: [DONE]\n\n"

    def error_event(self, kind: str, message: str) -> bytes:
        """An in-band error in the provider's own format: its SDK raises on it."""
        if self.provider == "anthropic":
            body = {"type": "error", "error": {"type": kind, "message": message}}
            return data_event(json.dumps(body), "error")
        return data_event(json.dumps({"error": {"type": kind, "code": kind, "message": message}}))


def _message(err: object) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or "error")
    return str(err or "error")


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
