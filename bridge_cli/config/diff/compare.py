"""Compare two normalised configs: routes, upstreams and faults matched by name (a
reordering is no change; an entry whose name alone changed is a rename), every difference
a Change classified by the one rules table (rules.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge_cli.config.diff.normalise import Side

# Lists of entries matched by `name` (by their `where`, see Diff).
NAMED = {"routes", "routes[].upstreams", "chaos.faults"}


@dataclass(frozen=True)
class Diff:
    """One difference before classification. `path` names the entries
    (routes[openai].retry.attempts), `where` doesn't (routes[].retry.attempts): rules
    match on `where`. kind: added | removed | changed | renamed."""

    path: str
    where: str
    old: Any
    new: Any
    kind: str
    route: str | None = None  # the route it belongs to (a fault's route), for grouping

    @property
    def key(self) -> str:
        """The last key of the path: what picks the unit a value is shown in."""
        return self.where.rsplit(".", 1)[-1].removesuffix("[]")


@dataclass(frozen=True)
class Change:
    """One classified change: what moved, how bad it is, and why, in one line."""

    route: str | None
    path: str
    old: Any
    new: Any
    kind: str
    severity: str  # breaking | risky | safe
    explanation: str
    rule: str  # the name of the rule in rules.RULES that classified it

    def to_dict(self) -> dict:
        """JSON-ready form (`bridge diff --format json`)."""
        return dict(self.__dict__)


def diff_sides(old: Side, new: Side) -> list[Change]:
    """Every classified change from `old` to `new`, in config order."""
    from bridge_cli.config.diff.rules import classify

    return [classify(d) for d in differences(old.plain, new.plain)]


def differences(old: dict, new: dict) -> list[Diff]:
    """Every difference between two plain configs (normalise.plain_config)."""
    return _walk(old, new, "", "", None)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(old: Any, new: Any, path: str, where: str, route: str | None) -> list[Diff]:
    if old == new:
        return []
    if where in NAMED and isinstance(old, list) and isinstance(new, list):
        return _named(old, new, path, where, route)
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Diff] = []
        for key in dict.fromkeys([*old, *new]):
            out += _walk(old.get(key), new.get(key), _join(path, key), _join(where, key), route)
        return out
    kind = "added" if old is None else "removed" if new is None else "changed"
    return [Diff(path, where, old, new, kind, route)]


def _rest(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "name"}


def _owner(where: str, entry: dict, route: str | None) -> str | None:
    """The route an entry's changes are grouped under."""
    if where == "routes":
        return entry["name"]
    if where == "chaos.faults":
        return None if entry.get("route") in (None, "*") else entry["route"]
    return route


def _named(old: list[dict], new: list[dict], path: str, where: str,
           route: str | None) -> list[Diff]:
    """Entries matched by name; a removed and an added entry equal but for the name are
    one rename."""
    olds = {e["name"]: e for e in old}
    news = {e["name"]: e for e in new}
    gone = [n for n in olds if n not in news]
    came = [n for n in news if n not in olds]
    renames: dict[str, str] = {}
    for name in gone:
        same = next((c for c in came if c not in renames.values()
                     and _rest(news[c]) == _rest(olds[name])), None)
        if same is not None:
            renames[name] = same
    out: list[Diff] = []
    item = f"{where}[]"
    for name, entry in olds.items():
        at = f"{path}[{name}]"
        if name in news:
            out += _walk(entry, news[name], at, item, _owner(where, news[name], route))
        elif name in renames:
            to = renames[name]
            out.append(Diff(f"{path}[{to}]", item, name, to, "renamed",
                            _owner(where, news[to], route)))
        else:
            out.append(Diff(at, item, entry, None, "removed", _owner(where, entry, route)))
    for name in came:
        if name not in renames.values():
            out.append(Diff(f"{path}[{name}]", item, None, news[name], "added",
                            _owner(where, news[name], route)))
    return out
