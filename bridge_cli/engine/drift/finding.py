"""One change in an endpoint's bodies, with how it is classified and stored."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# kind -> severity: what a client reading the old shape suffers from the change.
SEVERITY = {
    "field_missing": "breaking",
    "type_changed": "breaking",
    "enum_value_gone": "breaking",
    "item_type_changed": "breaking",
    "schema_violation": "breaking",
    "field_added": "additive",
    "enum_value_added": "additive",
    "became_nullable": "loosening",
}
KINDS = frozenset(SEVERITY)
SEVERITIES = frozenset(SEVERITY.values())
_TEXT = ("route", "endpoint", "path", "kind", "severity", "example_flow")


@dataclass
class Finding:
    """A change seen in the bodies of one endpoint; `first_seen` in epoch seconds."""

    route: str
    endpoint: str  # as endpoint() makes it
    path: str  # JSON path of the change: '$', '$.usage.total_tokens', '$.items[].price'
    kind: str  # one of KINDS
    severity: str  # breaking | additive | loosening
    before: str | None  # short text: 'integer', 'required', '"a", "b"'
    after: str | None  # short text: 'string', 'absent', 'null'
    first_seen: float
    count: int
    example_flow: str

    @property
    def key(self) -> str:
        """The identity of one distinct change: raised once, counted after that."""
        return f"{self.route}|{self.endpoint}|{self.path}|{self.kind}|{self.after}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        """A finding from to_dict()'s output; ValueError when a field is missing or wrong.
        Unknown keys are ignored, so a newer bridge's extra fields don't make it unreadable."""
        if not isinstance(d, dict):
            raise ValueError(f"a drift finding is a mapping, not {type(d).__name__}")
        for name in _TEXT:
            if not isinstance(d.get(name), str):
                raise ValueError(f"drift finding: {name!r} must be a string")
        for name in ("before", "after"):
            if name not in d or not isinstance(d[name], str | None):
                raise ValueError(f"drift finding: {name!r} must be a string or null")
        if d["kind"] not in KINDS:
            raise ValueError(f"drift finding: unknown kind {d['kind']!r}")
        if d["severity"] not in SEVERITIES:
            raise ValueError(f"drift finding: unknown severity {d['severity']!r}")
        seen, count = d.get("first_seen"), d.get("count")
        if not isinstance(seen, int | float) or isinstance(seen, bool):
            raise ValueError("drift finding: 'first_seen' must be a number (epoch seconds)")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("drift finding: 'count' must be a positive integer")
        return cls(**{name: d[name] for name in cls.__dataclass_fields__})


def make(kind: str, path: str, before: str | None, after: str | None, *, now: float,
         flow_id: str, route: str, endpoint: str) -> Finding:
    """A new finding of `kind`, seen once, with the severity its kind has."""
    return Finding(route=route, endpoint=endpoint, path=path, kind=kind,
                   severity=SEVERITY[kind], before=before, after=after,
                   first_seen=float(now), count=1, example_flow=flow_id)


def is_breaking(findings: list[Finding]) -> bool:
    """Does any of the findings break a client that reads the old shape?"""
    return any(f.severity == "breaking" for f in findings)
