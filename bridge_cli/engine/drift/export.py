"""A learned shape as a JSON Schema (draft 2020-12), merged by genson.

Enums are left out: they are a guess from the values seen, and a schema check would call a
new value a violation where learning calls it additive.
"""

from __future__ import annotations

from genson import SchemaBuilder

from bridge_cli.engine.drift.shape import Shape

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def to_schema(shape: Shape) -> dict:
    """The JSON Schema of everything `shape` learned; {} (anything) when it learned nothing."""
    builder = SchemaBuilder(schema_uri=DRAFT)
    for fragment in _fragments(shape):
        builder.add_schema(fragment)
    return builder.to_schema()


def _node(shape: Shape) -> dict:
    builder = SchemaBuilder(schema_uri=None)
    for fragment in _fragments(shape):
        builder.add_schema(fragment)
    return builder.to_schema()


def _fragments(shape: Shape) -> list[dict]:
    """One schema per JSON type seen at this position; genson merges them."""
    out = []
    for name in shape.types:
        if name == "integer" and "number" in shape.types:
            continue  # an integer is a number
        if name == "object":
            out.append({"type": "object",
                        "properties": {k: _node(f) for k, f in shape.fields.items()},
                        "required": sorted(k for k, f in shape.fields.items()
                                           if f.present == shape.objects)})
        elif name == "array" and shape.items is not None:
            out.append({"type": "array", "items": _node(shape.items)})
        else:
            out.append({"type": name})
    return out
