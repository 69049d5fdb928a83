"""An endpoint's learned baseline: what its bodies look like, and what changed."""

from __future__ import annotations

from bridge_cli.engine.drift.compare import changes
from bridge_cli.engine.drift.export import to_schema
from bridge_cli.engine.drift.finding import Finding, make
from bridge_cli.engine.drift.shape import Shape

MIN_OBSERVATIONS = 3  # documents that only teach before any change is raised


class Baseline:
    """What one endpoint's bodies look like, learned from observed JSON documents.

    Two shapes: `normal`, what bodies are checked against, and `changed`, what the
    documents that showed a change looked like. A document that shows no change is learned
    into normal; one that does goes to changed, so the change is raised again (and counted)
    by every later document that shows it, until accept() adopts it.
    """

    FORMAT: int = 1

    def __init__(self) -> None:
        self.normal = Shape()
        self.changed = Shape()
        self._normal_docs = 0
        self._changed_docs = 0

    @property
    def observations(self) -> int:
        """Documents observed in all."""
        return self._normal_docs + self._changed_docs

    def observe(self, doc: object, *, now: float, flow_id: str, route: str, endpoint: str
                ) -> list[Finding]:
        """Compare doc with what was learned so far, then learn it; the changes doc shows.
        The first MIN_OBSERVATIONS documents only learn (see compare.py for the classes)."""
        shape = Shape()
        shape.present = 1
        shape.learn([doc])
        found = []
        if self._normal_docs >= MIN_OBSERVATIONS:
            found = [make(kind, path, before, after, now=now, flow_id=flow_id, route=route,
                          endpoint=endpoint)
                     for kind, path, before, after in changes(self.normal, shape)]
        if found:
            self.changed.merge(shape)
            self._changed_docs += 1
        else:
            self.normal.merge(shape)
            self._normal_docs += 1
        return found

    def accept(self) -> None:
        """Adopt what was observed as the new normal (after a reported change)."""
        self.normal.merge(self.changed)
        self._normal_docs += self._changed_docs
        self.changed, self._changed_docs = Shape(), 0

    def schema(self) -> dict:
        """The normal shape as a JSON Schema (draft 2020-12)."""
        return to_schema(self.normal)

    def to_dict(self) -> dict:
        """JSON-compatible, with "format": FORMAT."""
        return {"format": self.FORMAT,
                "normal": {"documents": self._normal_docs, "shape": self.normal.to_dict()},
                "changed": {"documents": self._changed_docs, "shape": self.changed.to_dict()}}

    @classmethod
    def from_dict(cls, d: dict) -> Baseline:
        """A baseline to_dict() wrote; ValueError when malformed or of a newer format."""
        if not isinstance(d, dict):
            raise ValueError("a drift baseline is a mapping")
        fmt = d.get("format")
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
            raise ValueError("drift baseline: 'format' must be a positive integer")
        if fmt > cls.FORMAT:
            raise ValueError(f"drift baseline of format {fmt} is newer than this bridge reads "
                             f"({cls.FORMAT}); upgrade bridge or clear the drift records")
        baseline = cls()
        baseline._normal_docs, baseline.normal = _part(d, "normal")
        baseline._changed_docs, baseline.changed = _part(d, "changed")
        return baseline


def _part(d: dict, name: str) -> tuple[int, Shape]:
    part = d.get(name)
    if not isinstance(part, dict):
        raise ValueError(f"drift baseline: {name!r} must be a mapping")
    docs = part.get("documents")
    if not isinstance(docs, int) or isinstance(docs, bool) or docs < 0:
        raise ValueError(f"drift baseline: {name}.documents must be a count")
    return docs, Shape.from_dict(part.get("shape"))
