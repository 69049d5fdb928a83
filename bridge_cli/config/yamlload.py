"""Load YAML the way a config author means it, and remember where every value was written.

PyYAML follows YAML 1.1, where a bare `on`, `off`, `yes`, `no` are booleans: `retry: {on:
[502]}` would arrive as `{True: [502]}`. bridge's loader keeps those words as the strings
the user wrote (only true/false are booleans, as in YAML 1.2), refuses duplicate keys (the
last one silently winning hides mistakes), and keeps the node tree so that an error can
name the line of any value.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bridge_cli.errors import ConfigError

_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"

Path = Sequence[str | int]


class BadKeyError(ConstructorError):
    """A mapping key bridge refuses: one set twice, or one that is not a string."""


class Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (true/false only), no duplicate keys, and only
    string keys (every key in a bridge config is a name)."""

    # Copy the inherited table, minus the YAML 1.1 boolean words, before adding ours:
    # add_implicit_resolver would otherwise mutate SafeLoader's own table. Dates stay
    # strings too: no config value is a timestamp, and a `date` object in an error message
    # would read as the string it looks like.
    yaml_implicit_resolvers = {
        first: [
            (tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *base` entries may be overridden by design
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise BadKeyError(
                        None, None,
                        f"a key must be a string, got {key!r} (quote it: \"{key_node.value}\")",
                        key_node.start_mark,
                    )  # fmt: skip
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    raise BadKeyError(
                        None, None, f"duplicate key '{key}' (first set on line {first})",
                        key_node.start_mark,
                    )  # fmt: skip
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class YamlDoc:
    """Loaded data, and the node tree it came from, to find where a path was written."""

    data: Any
    root: Node | None
    source: str

    def where(self, path: Path) -> tuple[int, int]:
        """(line, column), both from 1, of the value at `path`: of its key when the last
        step is a mapping key; of the nearest enclosing node when the path isn't there."""
        node = self.root
        if node is None:
            return (1, 1)
        mark = node.start_mark
        for step in path:
            found = _child(node, step)
            if found is None:
                break
            key_node, node = found
            mark = (key_node or node).start_mark
        return (mark.line + 1, mark.column + 1)

    def line(self, path: Path) -> int:
        """Line (from 1) where the value at `path` was written; see where()."""
        return self.where(path)[0]


def _child(node: Node, step: str | int) -> tuple[Node | None, Node] | None:
    """(key node, value node) of `step` inside `node`, following `<<` merges."""
    if isinstance(node, SequenceNode) and isinstance(step, int):
        if 0 <= step < len(node.value):
            return None, node.value[step]
        return None
    if not isinstance(node, MappingNode):
        return None
    merged: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(
                value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            )
        elif isinstance(key_node, ScalarNode) and key_node.value == step:
            return key_node, value_node
    for source in merged:
        if (found := _child(source, step)) is not None:
            return found
    return None


def load_yaml(text: str, source: str = "<string>") -> YamlDoc:
    """Parse one YAML document; malformed YAML raises ConfigError "SOURCE:LINE: invalid YAML: …"."""
    loader = Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except BadKeyError as exc:
        raise ConfigError(f"{source}:{exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_message(exc, source)) from None
    except yaml.YAMLError as exc:  # unmarked: e.g. a character the reader refuses
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return YamlDoc(data, root, source)


def _yaml_message(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    message = f"{source}:{line}: invalid YAML: {exc.problem or exc.context}"
    # The context often points where the trouble started (an unclosed bracket or quote).
    if exc.context and exc.problem and exc.context_mark and exc.context_mark.line + 1 != line:
        message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
    return message
