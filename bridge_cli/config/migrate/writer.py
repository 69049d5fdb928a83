"""Write a migrated config as YAML text with ruamel.yaml, keeping what comments can be kept.

Where a step kept the structure (ruamel's commented maps come back from it), their
comments and key order come back too. A version 1 file's structure does not survive, so
its comments are read from the text: the block at the top of the file carries over to the
top of the new one, and the comment written above (or beside) a connector's key carries
over to the route it became.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from bridge_cli.config.migrate.chain import Note

_COMMENT = re.compile(r"^\s*#")
_EOL = re.compile(r"\s#\s?(.*)$")


@dataclass
class Comments:
    """Comments to carry over: the file's leading block, and one per connector name."""

    leading: list[str] = field(default_factory=list)
    connectors: dict[str, list[str]] = field(default_factory=dict)


def round_trip_yaml() -> YAML:
    """ruamel.yaml in round-trip mode, laid out like bridge's recipes."""
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    yaml.preserve_quotes = True
    return yaml


def load_round_trip(text: str) -> Any:
    """The document of `text` with its comments and key order (ruamel's commented types).
    Call it only on text the project's own loader accepted (limits, duplicate keys)."""
    return round_trip_yaml().load(text)


def read_comments(text: str, doc: Any) -> Comments:
    """The leading comment block of `text` and each connector's comment (lines right
    above its key, and one beside it), as comment text without the `#`."""
    lines = text.split("\n")
    found = Comments()
    for line in lines:
        if not _COMMENT.match(line):
            break
        found.leading.append(_strip(line))
    connectors = doc.get("connectors") if isinstance(doc, CommentedMap) else None
    if not isinstance(connectors, CommentedMap):
        return found
    top = len(found.leading)
    for name in connectors:
        row = connectors.lc.key(name)[0]
        above: list[str] = []
        for line in reversed(lines[top:row]):
            if not _COMMENT.match(line):
                break
            above.insert(0, _strip(line))
        if beside := _EOL.search(lines[row]):
            above.append(beside.group(1).rstrip())
        if above:
            found.connectors[str(name)] = above
    return found


def _strip(line: str) -> str:
    return re.sub(r"^\s*#\s?", "", line).rstrip()


def dump(doc: Any, comments: Comments | None = None, notes: list[Note] = ()) -> str:
    """YAML text of `doc`; `comments` of a version 1 file placed by the `moved` notes that
    say which route each connector became."""
    tree = commented(doc)
    if comments is not None and isinstance(tree, CommentedMap):
        if comments.leading:
            tree.yaml_set_start_comment("\n".join(comments.leading))
        _place_connector_comments(tree, comments, notes)
    out = io.StringIO()
    round_trip_yaml().dump(tree, out)
    return out.getvalue()


def _place_connector_comments(tree: CommentedMap, comments: Comments, notes) -> None:
    routes = tree.get("routes")
    if not isinstance(routes, CommentedSeq):
        return
    index = {r.get("name"): i for i, r in enumerate(routes) if isinstance(r, dict)}
    for note in notes:
        if note.kind != "moved" or not note.target.startswith("routes["):
            continue
        connector = note.where.removeprefix("connectors.")
        if note.where.startswith("connectors.") and connector in comments.connectors:
            i = index.get(note.target[len("routes["):-1])
            if i is not None:
                text = "\n".join(comments.connectors.pop(connector))
                routes.yaml_set_comment_before_after_key(i, before=text, indent=2)


def commented(value: Any) -> Any:
    """`value` with plain dicts and lists made ruamel's commented types (which keep the
    layout); commented ones, and everything inside them, are left as they are."""
    if isinstance(value, CommentedMap | CommentedSeq):
        return value
    if isinstance(value, dict):
        return CommentedMap((k, commented(v)) for k, v in value.items())
    if isinstance(value, list):
        return CommentedSeq(commented(v) for v in value)
    return value
