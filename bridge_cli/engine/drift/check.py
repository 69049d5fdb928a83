"""Bodies held against a supplied JSON Schema (`drift: {schema: ...}`), with jsonschema."""

from __future__ import annotations

import json
import re

from jsonschema import exceptions, validators

from bridge_cli.engine.drift.compare import field_path
from bridge_cli.engine.drift.finding import Finding, make

_VALIDATORS: dict[int, tuple[dict, object]] = {}  # id(schema) -> (schema, its validator)
_CACHED = 32
_SHORT = 60  # characters of a value quoted in before/after


def check(schema: dict, doc: object, *, now: float, flow_id: str, route: str, endpoint: str
          ) -> list[Finding]:
    """Findings of doc against a supplied JSON Schema: each violation a schema_violation,
    breaking, at the error's path (array indexes as '[]'). ValueError on an invalid schema."""
    found: dict[str, Finding] = {}
    for error in _validator(schema).iter_errors(doc):
        path = "$" + "".join("[]" if isinstance(p, int) else field_path("", p)
                             for p in error.absolute_path)
        for where, before, after in _describe(error, path):
            f = make("schema_violation", where, before, after, now=now, flow_id=flow_id,
                     route=route, endpoint=endpoint)
            found.setdefault(f.key, f)  # one finding per distinct violation, not per item
    return list(found.values())


def _validator(schema: dict):
    """The schema's validator, compiled once per schema object (the addon checks every body)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as e:
        raise ValueError(f"not a valid JSON Schema: {e.message}") from None
    if len(_VALIDATORS) >= _CACHED:
        _VALIDATORS.clear()
    validator = cls(schema)
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def _describe(error, path: str) -> list[tuple[str, str | None, str | None]]:
    """(JSON path, before, after) of one error, in words that don't change from body to body
    (so one violation is one finding, counted)."""
    kind, want, got = error.validator, error.validator_value, error.instance
    if kind == "required" and isinstance(got, dict):
        return [(field_path(path, name), "required", "absent") for name in want if name not in got]
    if kind == "additionalProperties" and want is False and isinstance(got, dict):
        known = error.schema.get("properties", {})
        patterns = error.schema.get("patternProperties", {})
        return [(field_path(path, name), "not allowed", "present") for name in got
                if name not in known and not any(re.search(p, name) for p in patterns)]
    if kind == "type":
        return [(path, "|".join(want) if isinstance(want, list) else str(want), _type(got))]
    if kind in ("enum", "const"):
        allowed = want if kind == "enum" else [want]
        return [(path, _short(", ".join(json.dumps(v) for v in allowed)),
                 _short(json.dumps(got)))]
    return [(path, _short(f"{kind}: {json.dumps(want)}"), f"fails {kind}")]


def _type(value: object) -> str:
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    return {type(None): "null", bool: "boolean", int: "integer", str: "string",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _short(text: str) -> str:
    return text if len(text) <= _SHORT else text[:_SHORT - 1] + "…"
