"""The benchmarks' local upstream and their LLM request bodies (not a benchmark itself:
`./dev bench` skips files starting with `_`).

One asyncio process, HTTP/1.1 keep-alive, loopback only:

- `POST /v1/chat/completions` answers an OpenAI-style chat completion (`"model":
  "gpt-4o-mini"`, with `usage`) of fixed bytes; when the request body asks for
  `"stream": true` it answers Server-Sent Events instead: `--sse-events` chunks
  `--sse-gap-ms` apart (the first one gap after the headers, as a model's first token),
  then `data: [DONE]`, chunked;
- anything else answers `PLAIN_BODY`, the small JSON body overhead.py's GET targets get.

`chat_body(tag, n)` makes the request bodies: every one unique (`tag` is unique per load
generator run, `n` counts), so a response cache always misses; `wrk_lua` makes wrk send the
same bodies.

    python benchmarks/_llm.py _upstream PORT_FILE [SSE_EVENTS] [SSE_GAP_MS]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

HOST = "127.0.0.1"
LLM_PATH = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
PLAIN_BODY = b'{"id":"bench-0001","object":"bench.result","ok":true,"items":[1,2,3],"model":"local"}'
COMPLETION = (
    b'{"id":"chatcmpl-bench0001","object":"chat.completion","created":1715367049,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_bench","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hi! How can I help you today?"},'
    b'"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":24,"completion_tokens":9,"total_tokens":33}}')
# The body's text around the unique part; the Lua script below builds the same bytes.
_BODY_HEAD = ('{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
              '{"role":"user","content":"bench ')
_BODY_TAIL = ': say hi"}],"max_tokens":16%s}'


def chat_body(tag: str, n: int, stream: bool = False) -> bytes:
    """A chat-completion request body that no other request of the run repeats."""
    return (_BODY_HEAD + f"{tag} {n}" + _BODY_TAIL % (',"stream":true' if stream else "")).encode()


def wrk_lua(tag: str, path: str = LLM_PATH, headers: dict | None = None) -> str:
    """A wrk script POSTing `chat_body(tag + thread, n)` bodies, n = 1, 2, ... per thread."""
    head, tail = _BODY_HEAD, _BODY_TAIL % ""  # Lua long strings take them verbatim
    hs = "".join(f'["{k}"] = "{v}", ' for k, v in {**(headers or {}),
                                                  "Content-Type": "application/json"}.items())
    return f"""
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
local n = 0
local prefix
function init(args)
  prefix = [[{head}{tag}-]] .. tostring(tid or 0) .. " "
end
request = function()
  n = n + 1
  local body = prefix .. n .. [[{tail}]]
  return wrk.format("POST", "{path}", {{{hs}}}, body)
end
"""


def sse_chunks(events: int) -> list[bytes]:
    """The SSE events of a streamed completion, each framed as one HTTP chunk."""
    out = []
    for i in range(events):
        last = i == events - 1
        delta = b'{}' if last else b'{"content":"tok%d "}' % i
        data = (b'data: {"id":"chatcmpl-bench0001","object":"chat.completion.chunk",'
                b'"created":1715367049,"model":"gpt-4o-mini","choices":[{"index":0,"delta":'
                + delta + b',"finish_reason":' + (b'"stop"' if last else b'null') + b'}]}\n\n')
        out.append(b"%x\r\n%s\r\n" % (len(data), data))
    done = b"data: [DONE]\n\n"
    out.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    return out


# GET CATALOG_PATH: a ~10 KB JSON document of the everyday kind (a list of records), what
# benchmarks/drift.py checks for drift.
CATALOG_PATH = "/v1/catalog"
CATALOG = json.dumps({"object": "list", "has_more": False, "data": [
    {"id": f"prod_{i:04d}", "name": f"Product {i}", "price": {"amount": 1000 + i, "currency": "eur"},
     "active": i % 3 != 0, "tags": ["new", "sale"][: i % 3], "stock": None if i % 5 == 0 else i,
     "created": 1715367049 + i} for i in range(64)]}).encode()


def _answer(body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (ctype, len(body), body))


PLAIN_RESPONSE = _answer(PLAIN_BODY)
CATALOG_RESPONSE = _answer(CATALOG)
COMPLETION_RESPONSE = _answer(COMPLETION)
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


def _content_length(head: bytes) -> int:
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    end = head.find(b"\r\n", i + 2)
    return int(head[i + 17:end if end >= 0 else None])


class _Upstream(asyncio.Protocol):
    """Answers requests in order; a stream in flight holds the next answers until it ends."""

    events, gap = 20, 0.005

    def connection_made(self, transport):
        self.transport, self.buf, self.streaming = transport, b"", False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while not self.streaming and (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end + 2]
            if b"transfer-encoding: chunked" in head.lower():
                self.transport.close()  # never sent by the clients and proxies benchmarked
                return
            total = end + 4 + _content_length(head)
            if len(self.buf) < total:
                break
            body, self.buf = self.buf[end + 4:total], self.buf[total:]
            if head.startswith(b"GET " + CATALOG_PATH.encode()):
                out.append(CATALOG_RESPONSE)
            elif not head.startswith(b"POST " + LLM_PATH.encode()):
                out.append(PLAIN_RESPONSE)
            elif b'"stream":true' in body or b'"stream": true' in body:
                self.streaming = True
                asyncio.get_running_loop().create_task(self._stream(b"".join(out)))
                out = []
            else:
                out.append(COMPLETION_RESPONSE)
        if out:
            self.transport.write(b"".join(out))

    async def _stream(self, before: bytes) -> None:
        self.transport.write(before + SSE_HEAD)
        for chunk in sse_chunks(self.events):
            await asyncio.sleep(self.gap)
            if self.transport.is_closing():
                return
            self.transport.write(chunk)
        self.streaming = False
        self.data_received(b"")


async def _upstream_main(port_file: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, HOST, 0, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tmp = port_file + ".tmp"
    Path(tmp).write_text(str(server.sockets[0].getsockname()[1]))
    os.replace(tmp, port_file)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_upstream":
        if len(sys.argv) == 5:
            _Upstream.events, _Upstream.gap = int(sys.argv[3]), float(sys.argv[4]) / 1000
        asyncio.run(_upstream_main(sys.argv[2]))
    else:
        sys.exit(__doc__)
