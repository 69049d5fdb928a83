"""Which body a drift check is about: the path template and the endpoint name."""

from __future__ import annotations

import re

# An ID-like path segment: all digits, a UUID, hex of 8+ chars, or a long token (20+ chars
# of [A-Za-z0-9_-] with a digit in it). Words such as 'v1', 'chat', 'completions' are not.
ID_SEGMENT = re.compile(
    r"\d+"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{8,}"
    r"|(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{20,}")


def template(path: str) -> str:
    """'/users/42/orders/9f3c2a1b?x=1' -> '/users/{id}/orders/{id}' (query dropped)."""
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    return "/".join("{id}" if ID_SEGMENT.fullmatch(s) else s for s in path.split("/"))


def endpoint(method: str, path_template: str, part: str = "response") -> str:
    """'GET /users/{id}' for a response body; part 'request' -> 'POST /v1/x request', an SSE
    event of type t (part 'event:t') -> 'POST /v1/x event:t'. ValueError on another part."""
    name = f"{method.upper()} {path_template}"
    if part == "response":
        return name
    if part == "request" or (part.startswith("event:") and len(part) > 6):
        return f"{name} {part}"
    raise ValueError(f"drift endpoint part {part!r}: use 'response', 'request' or 'event:TYPE'")
