"""Which bodies drift looks at, and what `action: block` answers: the decisions the drift
addon applies."""

from __future__ import annotations

from typing import Any

from bridge_cli.common.jsondoc import json_value
from bridge_cli.engine.drift.finding import Finding
from bridge_cli.engine.streams import sse_events

MAX_BODY = 2 << 20  # bytes: larger bodies are not parsed for drift (nor held, streamed)


def document(body: bytes | None, content_type: str | None) -> Any:
    """The JSON document drift checks in a body, or None: not JSON (by its content type
    when it has one), too big, or a bare scalar with no shape to learn."""
    if content_type is not None and not content_type.split(";")[0].strip().lower() \
            .endswith("json"):
        return None
    doc = json_value(body, MAX_BODY)
    return doc if isinstance(doc, dict | list) else None


def stream_documents(raw: bytes) -> list[tuple[str, Any]]:
    """(event type, JSON document) of each event of a streamed answer."""
    return [(kind, doc) for kind, doc in sse_events(raw.decode("utf-8", "replace"))
            if isinstance(doc, dict | list)]


def blocking(findings: list[Finding]) -> Finding | None:
    """The finding that makes `action: block` refuse the answer: the first breaking one
    (additive and loosening changes pass)."""
    return next((f for f in findings if f.severity == "breaking"), None)


def block_message(route: str, f: Finding) -> str:
    """The 502 schema_drift message: what changed, and the two commands that deal with it."""
    return (f"{route} {f.endpoint}: the answer changed shape at {f.path} ({f.before} → "
            f"{f.after}); `bridge drift` lists it, `bridge drift accept` takes the new shape")
