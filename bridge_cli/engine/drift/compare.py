"""How one document's shape differs from the learned normal: the drift classification.

- field_missing (breaking): a field every object at that position had so far is absent.
  A field seen in only some of them is optional: its absence is never a finding.
- type_changed / item_type_changed (breaking): a value of a type never seen there (for an
  array's items: item_type_changed). Numbers follow JSON Schema: an integer is a number,
  so 3 where 2.5 was seen is nothing, and 2.5 where only integers (3, 4.0) were seen is
  type_changed. A position that was only ever null gaining a type is learned, not raised:
  its type was not known before.
- became_nullable (loosening): null where a typed position never had null.
- field_added (additive): a field no object at that position had.
- enum_value_added (additive): a string position with at most 10 distinct values seen 20+
  times (an enum, by the look of it) shows a new value.
- enum_value_gone is not raised: one document can't show a value is gone, only that it is
  absent this time, which an enum's other values always are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from bridge_cli.engine.drift.shape import ENUM_MAX, Shape

Change = tuple[str, str, str | None, str | None]  # kind, JSON path, before, after
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def changes(normal: Shape, doc: Shape, path: str = "$") -> Iterator[Change]:
    """The changes `doc` (one document's shape) shows against `normal`, outermost first."""
    yield from _types(normal, doc, path)
    yield from _enum(normal, doc, path)
    if normal.objects and doc.objects:
        yield from _fields(normal, doc, path)
    if normal.items is not None and doc.items is not None:
        yield from changes(normal.items, doc.items, f"{path}[]")


def _types(normal: Shape, doc: Shape, path: str) -> Iterator[Change]:
    known = [t for t in normal.types if t != "null"]
    if not known:
        return
    if "null" in doc.types and "null" not in normal.types:
        yield "became_nullable", path, _text(known), "null"
    kind = "item_type_changed" if path.endswith("[]") else "type_changed"
    for t in doc.types:
        if t == "null" or t in normal.types or (t == "integer" and "number" in normal.types):
            continue
        yield kind, path, _text(known), t


def _enum(normal: Shape, doc: Shape, path: str) -> Iterator[Change]:
    enum = normal.enum
    if enum is None or "string" not in doc.types:
        return
    before = ", ".join(json.dumps(v) for v in sorted(enum))
    if doc.values is None:  # this document alone had more distinct (or long) strings
        yield "enum_value_added", path, before, f"more than {ENUM_MAX} values"
        return
    for value in sorted(doc.values - enum):
        yield "enum_value_added", path, before, json.dumps(value)


def _fields(normal: Shape, doc: Shape, path: str) -> Iterator[Change]:
    for name, field in normal.fields.items():
        there = doc.fields.get(name)
        where = field_path(path, name)
        if field.present == normal.objects and (there is None or there.present < doc.objects):
            yield "field_missing", where, "required", "absent"
        if there is not None:
            yield from changes(field, there, where)
    for name in sorted(doc.fields.keys() - normal.fields.keys()):
        added = _text(list(doc.fields[name].types))
        yield "field_added", field_path(path, name), "absent", added


def field_path(path: str, name: str) -> str:
    """'$.usage' + 'total_tokens'; a name that is not identifier-like goes in brackets."""
    return f"{path}.{name}" if _NAME.fullmatch(name) else f"{path}[{json.dumps(name)}]"


def _text(types: list[str]) -> str:
    return "|".join(sorted(types)) or "unknown"
