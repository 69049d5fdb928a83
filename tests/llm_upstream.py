"""A raw asyncio LLM upstream that misbehaves exactly as told.

A web framework can't reset before headers, stall with the socket open or end a chunked
body without its last chunk; this server writes HTTP/1.1 by hand, so it can. Each request
takes the next behaviour from the server's script (the last one repeats), answers in the
OpenAI chat-completions or Anthropic messages format, and is logged with its arrival time,
so tests can check that nothing was hammered.

An answer is the server's `answer` text, streamed a word at a time. A request whose last
message is the assistant's (a prefill) gets the rest of the answer after that text, or a
400 when the server refuses prefills.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

ANSWER = ("Bridge keeps an answer whole when the stream under it breaks: it asks another "
          "model to carry on from the last word the client saw. ")


@dataclass
class Logged:
    at: float  # monotonic seconds
    behaviour: str
    body: dict


@dataclass
class LlmServer:
    """Behaviours (one per request, the last repeats):
    ok | cut:K (K words, then the socket closes mid-body) | stall:K (K words, then silence,
    socket open) | silent (reads the request, never answers) | reset (closes before any
    header) | headers_only (200 headers, then silence) | no_done (the whole answer, no
    terminator) | no_finish (K words, then a clean end) | malformed (a broken event in the
    middle) | error:STATUS:TYPE_OR_CODE | slow:S (S seconds before answering, then ok)."""

    script: list[str] = field(default_factory=lambda: ["ok"])
    provider: str = "openai"
    model: str = "gpt-4o-mini"
    answer: str = ANSWER
    prefill: bool = True  # accepts a trailing assistant message
    log: list[Logged] = field(default_factory=list)
    port: int = 0
    _server: asyncio.base_events.Server | None = None
    _writers: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, behaviour: str | None = None) -> int:
        return sum(1 for e in self.log if behaviour is None or e.behaviour == behaviour)

    def gaps(self) -> list[float]:
        return [b.at - a.at for a, b in zip(self.log, self.log[1:], strict=False)]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = json.loads(await reader.readexactly(length) or b"{}")
            index = min(len(self.log), len(self.script) - 1)
            behaviour = self.script[index]
            self.log.append(Logged(time.monotonic(), behaviour, body))
            await self._answer(behaviour, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    async def _answer(self, behaviour: str, body: dict, w: asyncio.StreamWriter) -> None:
        kind, _, arg = behaviour.partition(":")
        if kind == "silent":
            await asyncio.sleep(3600)
        if kind == "reset":
            w.transport.abort()
            return
        if kind == "slow":
            await asyncio.sleep(float(arg))
        if kind == "error":
            status, _, what = arg.partition(":")
            return await self._error(int(status), what, w)
        messages = body.get("messages") or []
        prefix = ""
        if messages and messages[-1].get("role") == "assistant":
            if not self.prefill:
                return await self._error(400, "prefill_not_supported", w)
            prefix = messages[-1].get("content") or ""
        rest = self.answer[len(prefix):] if self.answer.startswith(prefix) else self.answer
        words = _words(rest)
        if not body.get("stream"):
            return await self._whole(rest, w)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        if kind == "headers_only":
            await w.drain()
            await asyncio.sleep(3600)
        events = self._events(words, body)
        k = int(arg) if arg.isdigit() else None
        if kind in ("cut", "stall", "no_finish"):
            events = events[: 1 + k]  # the start, then k words
        if kind == "no_done":
            events = events[:-1]
        if kind == "malformed":
            events.insert(3, b"data: {\"choices\": [{\"delta\": \n\n")
        for ev in events:
            w.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            await w.drain()
            await asyncio.sleep(0.002)
        if kind == "cut":
            w.transport.abort()
            return
        if kind == "stall":
            await asyncio.sleep(3600)
        w.write(b"0\r\n\r\n")
        await w.drain()
        w.close()

    def _events(self, words: list[str], body: dict) -> list[bytes]:
        if self.provider == "anthropic":
            return _anthropic_events(self.model, words)
        cid = f"chatcmpl-{self.port}-{len(self.log)}"
        def chunk(delta, finish=None, **extra):
            doc = {"id": cid, "object": "chat.completion.chunk", "created": 1700000000,
                   "model": self.model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return b"data: " + json.dumps(doc).encode() + b"\n\n"
        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": word}) for word in words]
        out.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 20, "completion_tokens": len(words),
                     "total_tokens": 20 + len(words)}
            doc = {"id": cid, "object": "chat.completion.chunk", "created": 1700000000,
                   "model": self.model, "choices": [], "usage": usage}
            out.append(b"data: " + json.dumps(doc).encode() + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out

    async def _whole(self, text: str, w: asyncio.StreamWriter) -> None:
        doc = {"id": f"chatcmpl-{self.port}", "object": "chat.completion", "created": 1,
               "model": self.model,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 20, "completion_tokens": len(_words(text)),
                         "total_tokens": 20 + len(_words(text))}}
        await _send(w, 200, doc)

    async def _error(self, status: int, what: str, w: asyncio.StreamWriter) -> None:
        if self.provider == "anthropic":
            doc = {"type": "error", "error": {"type": what, "message": f"{what} (test)"}}
        else:
            doc = {"error": {"message": f"{what} (test)", "type": "invalid_request_error",
                             "code": what}}
        await _send(w, status, doc)


async def _send(w: asyncio.StreamWriter, status: int, doc: dict) -> None:
    data = json.dumps(doc).encode()
    w.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, len(data), data))
    await w.drain()
    w.close()


def _words(text: str) -> list[str]:
    out, word = [], ""
    for ch in text:
        word += ch
        if ch == " ":
            out.append(word)
            word = ""
    return out + ([word] if word else [])


def _anthropic_events(model: str, words: list[str]) -> list[bytes]:
    def ev(kind: str, doc: dict) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **doc})}\n\n".encode()
    out = [ev("message_start", {"message": {
        "id": "msg_test", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "usage": {"input_tokens": 20, "output_tokens": 1}}}),
        ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
    out += [ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
            for w in words]
    out += [ev("content_block_stop", {"index": 0}),
            ev("message_delta", {"delta": {"stop_reason": "end_turn"},
                                 "usage": {"output_tokens": len(words)}}),
            ev("message_stop", {})]
    return out
