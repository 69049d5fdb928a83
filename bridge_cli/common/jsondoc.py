"""Reading a request or response body as JSON, the one way bridge does it: bodies that are
not JSON, too big to parse, or nested past Python's limit read as None, never an error."""

from __future__ import annotations

import json
from typing import Any


def json_value(body: bytes | str | None, limit: int | None = None) -> Any:
    """The JSON value of `body`; None when it is empty, over `limit` bytes or not JSON."""
    if not body or (limit is not None and len(body) > limit):
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def json_object(body: bytes | str | None, limit: int | None = None) -> dict | None:
    """The body as a JSON object, or None (not JSON, not an object, too big)."""
    doc = json_value(body, limit)
    return doc if isinstance(doc, dict) else None
