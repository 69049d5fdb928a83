"""The stored form of a cached response (an Entry) and its codec, shared by engine/cache.py,
which decides what to store, and store/responses.py, which keeps it."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FORMAT = 1  # of a stored entry; bump on an incompatible change (old entries become misses)

SKIP_STORED_HEADERS = frozenset({"set-cookie", "date", "age", "connection", "keep-alive",
                                 "transfer-encoding"})


@dataclass
class Entry:
    """A stored answer. Times: epoch seconds; events: (offset seconds, bytes) for streams."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stored_at: float
    parts: dict
    route: str
    events: list[tuple[float, bytes]] | None = None
    vary: list[str] | None = None  # set on a first-level record that points to second level

    def to_json(self) -> dict:
        """The stored JSON form, tagged with FORMAT; bytes as base64."""
        return {
            "format": FORMAT,
            "status": self.status,
            "headers": [[k, v] for k, v in self.headers],
            "body": base64.b64encode(self.body).decode(),
            "stored_at": self.stored_at,
            "parts": self.parts,
            "route": self.route,
            "events": None if self.events is None else
            [[round(t, 4), base64.b64encode(b).decode()] for t, b in self.events],
            "vary": self.vary,
        }

    @property
    def size(self) -> int:
        """The body's length in bytes."""
        return len(self.body)


def make_entry(status: int, headers: Iterable[tuple[str, str]], body: bytes, now: float,
               parts: dict, route: str, events: list[tuple[float, bytes]] | None = None) -> Entry:
    """An entry of what the upstream answered, without per-response and bridge headers."""
    kept = [(k, v) for k, v in headers if k.lower() not in SKIP_STORED_HEADERS
            and not k.lower().startswith("x-bridge-")]
    return Entry(status, kept, body, now, parts, route, events)


def vary_record(names: list[str], now: float, parts: dict, route: str) -> Entry:
    """A first-level record saying which request headers pick the second-level entry."""
    return Entry(0, [], b"", now, parts, route, vary=names)


def parse_entry(obj: Any) -> Entry | None:
    """The Entry in a stored JSON value, or None when it is missing, corrupt or of another
    format (a broken entry is a miss, never a crash or a wrong answer)."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return None
    try:
        events = obj.get("events")
        return Entry(
            status=int(obj["status"]),
            headers=[(str(k), str(v)) for k, v in obj["headers"]],
            body=base64.b64decode(obj["body"], validate=True),
            stored_at=float(obj["stored_at"]),
            parts=dict(obj["parts"]),
            route=str(obj["route"]),
            events=None if events is None else
            [(float(t), base64.b64decode(b, validate=True)) for t, b in events],
            vary=None if obj.get("vary") is None else [str(v) for v in obj["vary"]],
        )
    except (KeyError, TypeError, ValueError):
        return None
