"""What a try at one upstream entry sends: the client's request with that entry's own
`headers:` (replacing the client's of the same name), `model:` and `params:` (a value
sets a body field, None drops it). Only a JSON object body is rewritten; any other body
(or a compressed one, which doesn't parse) goes as the client sent it."""

from __future__ import annotations

import json

from bridge_cli.common.jsondoc import json_object
from bridge_cli.config.model import Upstream

Headers = tuple[tuple[str, str], ...]


def for_upstream(upstream: Upstream, headers: Headers, body: bytes) -> tuple[Headers, bytes]:
    """(headers, body) for a try at `upstream`; the inputs are left as they are."""
    if upstream.headers:
        own = {k.lower() for k in upstream.headers}
        headers = tuple((k, v) for k, v in headers if k.lower() not in own)
        headers += tuple(upstream.headers.items())
    if upstream.model is not None or upstream.params:
        body = _body(upstream, body)
    return headers, body


def _body(upstream: Upstream, body: bytes) -> bytes:
    doc = json_object(body)
    if doc is None:
        return body
    if upstream.model is not None:
        doc["model"] = upstream.model
    for key, value in upstream.params.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
