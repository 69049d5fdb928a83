"""Big answers pass through without being held whole: a body over the cache's
max_entry_size streams to the client and is not kept; a body without a declared length
streams once it passes bridge's buffer limit. The client always gets every byte."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from aiohttp import web

from bridge_cli.proxy.outbound import BUFFER_LIMIT
from tests.conftest import config_yaml, route_yaml

MB = 1 << 20


def payload(size: int) -> bytes:
    return (hashlib.sha256(str(size).encode()).hexdigest().encode() * (size // 64 + 1))[:size]


def answer(size: int, chunked: bool):
    data = payload(size)

    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=data, content_type="application/octet-stream")
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(data), 256 * 1024):
            await resp.write(data[i:i + 256 * 1024])
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("chunked", [False, True], ids=["declared-length", "chunked"])
def test_a_body_past_the_buffer_limit_streams_whole_and_is_not_cached(chunked, start_bridge,
                                                                     upstream):
    size = BUFFER_LIMIT + 3 * MB
    upstream.on("/big", answer(size, chunked))
    b = start_bridge(config_yaml(route_yaml("files", ("files-up", upstream.url),
                                            cache="{ttl: 10m}")))
    with httpx.Client(trust_env=False, timeout=30) as http:
        first = http.get(b.url("files") + "/big")
        second = http.get(b.url("files") + "/big")
    for r in (first, second):
        assert r.status_code == 200 and r.content == payload(size)
    assert second.headers.get("x-bridge-cache") != "hit"
    assert len(upstream.calls) == 2  # nothing kept: the second went to the upstream too


@pytest.mark.parametrize("size,kept", [(2 * MB, False), (MB // 2, True)])
def test_max_entry_size_decides_what_the_cache_keeps(size, kept, start_bridge, upstream):
    upstream.on("/file", answer(size, chunked=False))
    b = start_bridge(config_yaml(route_yaml("files", ("files-up", upstream.url),
                                            cache="{ttl: 10m, max_entry_size: 1MB}")))
    with httpx.Client(trust_env=False, timeout=30) as http:
        http.get(b.url("files") + "/file")
        again = http.get(b.url("files") + "/file")
    assert again.content == payload(size)
    assert (again.headers.get("x-bridge-cache") == "hit") is kept
    assert len(upstream.calls) == (1 if kept else 2)
