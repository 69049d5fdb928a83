"""What the values at one JSON position looked like: type counts, fields, items, strings.

A `Shape` is learned a column at a time: all the values a document has at one position
(the root, `$.data[].price` across every item, ...) go in as one list, so the per-value
work is C-level (`map(type, ...)`, `set.update`) and the Python work is per position. That
keeps observing a 10 KB body well under 0.5 ms on the event loop.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter

ENUM_MAX = 10  # a string field with at most this many distinct values may be an enum
ENUM_LEN = 64  # characters; a longer string is text, not an enum value
MAX_DEPTH = 32  # nesting learned; deeper values count by type only (no recursion blow-up)
TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
_NAMES = {type(None): "null", bool: "boolean", int: "integer", str: "string", list: "array",
          dict: "object"}


class Shape:
    """The learned shape of one JSON position. `present`: how many of the parent objects had
    this field; `types`: JSON type name -> values seen; `values`: the distinct short strings,
    None once there were more than ENUM_MAX or a long one."""

    __slots__ = ("present", "types", "fields", "items", "values")

    def __init__(self) -> None:
        self.present = 0
        self.types: dict[str, int] = {}
        self.fields: dict[str, Shape] = {}
        self.items: Shape | None = None
        self.values: set[str] | None = set()

    @property
    def objects(self) -> int:
        return self.types.get("object", 0)

    @property
    def enum(self) -> set[str] | None:
        """The string values, when they look like an enum: few, each seen >= 20 times all told."""
        if self.values and self.types.get("string", 0) >= 20:
            return self.values
        return None

    def learn(self, column: list, depth: int = 0) -> None:
        """Add the values one document has at this position, `depth` levels down."""
        kinds = set(map(type, column))
        if len(kinds) == 1:
            self._learn_kind(kinds.pop(), column, depth)
        else:
            for kind in kinds:
                self._learn_kind(kind, [v for v in column if type(v) is kind], depth)

    def _learn_kind(self, kind: type, values: list, depth: int) -> None:
        if kind is dict:
            self._count("object", len(values))
            if depth < MAX_DEPTH:
                self._learn_fields(values, depth + 1)
        elif kind is list:
            self._count("array", len(values))
            items = [] if depth >= MAX_DEPTH else list(chain.from_iterable(values))
            if items:
                if self.items is None:
                    self.items = Shape()
                self.items.learn(items, depth + 1)
        elif kind is str:
            self._count("string", len(values))
            if self.values is not None:
                self._learn_strings(values)
        elif kind is float:  # JSON Schema's integer: a number with no fraction (2.0 is one)
            whole = sum(map(float.is_integer, values))
            self._count("integer", whole)
            self._count("number", len(values) - whole)
        else:
            self._count(_NAMES.get(kind, "string"), len(values))

    def _count(self, name: str, n: int) -> None:
        if n:
            self.types[name] = self.types.get(name, 0) + n

    def _learn_fields(self, objects: list[dict], depth: int) -> None:
        columns = _columns(objects)
        fields = self.fields
        for name, column in columns.items():
            field = fields.get(name)
            if field is None:
                field = fields[name] = Shape()
            field.present += len(column)
            field.learn(column, depth)

    def _learn_strings(self, values: list[str]) -> None:
        seen = self.values
        seen.update(values)
        if len(seen) > ENUM_MAX or max(map(len, seen)) > ENUM_LEN:
            self.values = None

    def merge(self, other: Shape) -> None:
        """Add what `other` learned; `other`'s parts may be taken over, so drop it after."""
        self.present += other.present
        for name, n in other.types.items():
            self.types[name] = self.types.get(name, 0) + n
        for name, field in other.fields.items():
            mine = self.fields.get(name)
            if mine is None:
                self.fields[name] = field
            else:
                mine.merge(field)
        if other.items is not None:
            if self.items is None:
                self.items = other.items
            else:
                self.items.merge(other.items)
        if self.values is not None:
            if other.values is None or len(self.values | other.values) > ENUM_MAX:
                self.values = None
            else:
                self.values |= other.values

    def to_dict(self) -> dict:
        """JSON-compatible; empty parts are left out."""
        d: dict = {"present": self.present, "types": dict(self.types)}
        if self.fields:
            d["fields"] = {name: f.to_dict() for name, f in self.fields.items()}
        if self.items is not None:
            d["items"] = self.items.to_dict()
        d["values"] = None if self.values is None else sorted(self.values)
        return d

    @classmethod
    def from_dict(cls, d: object, where: str = "$", depth: int = 0) -> Shape:
        """The shape to_dict() wrote; ValueError naming the JSON position when malformed."""
        if not isinstance(d, dict) or depth > MAX_DEPTH:
            raise ValueError(f"drift baseline at {where}: expected a mapping, at most "
                             f"{MAX_DEPTH} levels deep")
        shape = cls()
        shape.present = _count(d.get("present"), where, "present")
        types = d.get("types")
        if not isinstance(types, dict) or not set(types) <= set(TYPES):
            raise ValueError(f"drift baseline at {where}: 'types' must map JSON type names")
        shape.types = {name: _count(n, where, name) for name, n in types.items()}
        fields = d.get("fields", {})
        if not isinstance(fields, dict):
            raise ValueError(f"drift baseline at {where}: 'fields' must be a mapping")
        shape.fields = {name: cls.from_dict(f, f"{where}.{name}", depth + 1)
                        for name, f in fields.items()}
        if d.get("items") is not None:
            shape.items = cls.from_dict(d["items"], f"{where}[]", depth + 1)
        values = d.get("values")
        if values is not None and (not isinstance(values, list)
                                   or not all(isinstance(v, str) for v in values)):
            raise ValueError(f"drift baseline at {where}: 'values' must be a list of strings")
        shape.values = None if values is None else set(values)
        return shape


def _columns(objects: list[dict]) -> dict[str, list]:
    """Each field's values across the objects that have it."""
    names = list(objects[0])
    if len(names) > 1 and len(set(map(len, objects))) == 1:
        try:  # the usual case, every object with the same fields: transposed in C
            return dict(zip(names, map(list, zip(*map(itemgetter(*names), objects), strict=True)),
                            strict=True))
        except KeyError:
            pass
    columns: dict[str, list] = {}
    for obj in objects:
        for name, value in obj.items():
            column = columns.get(name)
            if column is None:
                columns[name] = [value]
            else:
                column.append(value)
    return columns


def _count(n: object, where: str, name: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"drift baseline at {where}: {name!r} must be a count")
    return n
