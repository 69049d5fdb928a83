"""Load YAML the way a config author means it, and remember where every value was written.

PyYAML follows YAML 1.1, where a bare `on`, `off`, `yes`, `no` are booleans: `retry: {on:
[502]}` would arrive as `{True: [502]}`. bridge's loader keeps those words as the strings
the user wrote (only true/false are booleans, as in YAML 1.2), refuses duplicate keys (the
last one silently winning hides mistakes), and keeps the node tree so that an error can
name the line of any value.

A config can't take bridge down: what would make the parser or the checks after it hang,
blow up or overflow the stack (a huge file, nested aliases that expand to billions of
values, nesting thousands deep, control characters, numbers of thousands of digits) is
refused up front with a one-line error naming the limit.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bridge_cli.errors import ConfigError

_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"

Path = Sequence[str | int]

# Far beyond any real config, far below what would hurt: a 460 KB config (3,600 prices)
# takes about two seconds to check, and PyYAML overflows Python's stack near 300 levels.
MAX_BYTES = 1 << 20  # the largest config file read
MAX_BYTES_TEXT = "1 MiB"
MAX_DEPTH = 64  # mappings and lists inside each other, aliases followed
MAX_ALIASES = 500  # `*name` uses in one file
MAX_ALIAS_VALUES = 100_000  # values the aliases add when they are expanded
MAX_NUMBER_DIGITS = 30  # Python refuses int() of more than 4300 digits with a ValueError

# What YAML's reader refuses (C0 controls but tab and line breaks, DEL, C1 controls but
# NEL, surrogates, U+FFFE/U+FFFF): found first, to name its line and column in one line.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


class RefusedError(ConstructorError):
    """YAML that parses but that bridge refuses; `problem` is the one-line reason."""


class BadKeyError(RefusedError):
    """A mapping key bridge refuses: one set twice, or one that is not a string."""


class LimitError(RefusedError):
    """A document beyond one of the limits above."""


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

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # collections open around the node being composed
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # PyYAML composes recursively: count here, before Python's stack runs out.
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise LimitError(
                    None, None,
                    f"more than {MAX_ALIASES} YAML aliases (*name), bridge's limit: "
                    "write the values out, or use fewer aliases",
                    self.peek_event().start_mark,
                )  # fmt: skip
            return super().compose_node(parent, index)
        collection = self.check_event(MappingStartEvent, SequenceStartEvent)
        self._depth += collection
        try:
            if self._depth > MAX_DEPTH:
                raise LimitError(None, None, _too_deep(""), self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= collection

    def construct_number(self, node: ScalarNode) -> int | float:
        """An int or float of at most MAX_NUMBER_DIGITS digits (Python's int() refuses
        more than 4300 with a ValueError; no config value needs more than a few)."""
        digits = sum(c.isalnum() for c in node.value)
        if digits > MAX_NUMBER_DIGITS:
            raise LimitError(
                None, None,
                f"a number of {digits} digits, more than the {MAX_NUMBER_DIGITS} bridge reads: "
                "shorten it (or quote it, if it is text)",
                node.start_mark,
            )  # fmt: skip
        if node.tag == _INT_TAG:
            return self.construct_yaml_int(node)
        return self.construct_yaml_float(node)

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
Loader.add_constructor(_INT_TAG, Loader.construct_number)
Loader.add_constructor(_FLOAT_TAG, Loader.construct_number)


def _too_deep(how: str) -> str:
    return (
        f"nested deeper than {MAX_DEPTH} levels{how}, bridge's limit: "
        "flatten the mappings and lists"
    )


def _check_aliases(root: Node) -> None:
    """Refuse aliases that refer to the value containing them, that nest deeper than
    MAX_DEPTH once followed, or that add more than MAX_ALIAS_VALUES values ("billion
    laughs": nine aliases of nine aliases of ... in a few hundred bytes). The composer
    shares an aliased node, so each is measured once: linear in the file, whatever it
    would expand to."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    open_: set[int] = set()

    def measure(node: Node) -> tuple[int, int]:
        if id(node) in measured:
            return measured[id(node)]
        if id(node) in open_:
            raise LimitError(None, None, _CYCLE, node.start_mark)
        open_.add(id(node))
        values, depth = 1, 0
        for child, flattened in _children(node):
            child_values, child_depth = measure(child)  # the stack: <= MAX_DEPTH deep
            values += child_values
            depth = max(depth, child_depth - flattened)
        depth += not isinstance(node, ScalarNode)
        if depth > MAX_DEPTH:
            raise LimitError(
                None, None, _too_deep(" once its aliases are followed"), node.start_mark
            )
        added = values - len(measured) - 1  # at least this many come from aliases
        if added > MAX_ALIAS_VALUES:
            raise LimitError(
                None, None,
                f"YAML aliases (*name) expand to more than {MAX_ALIAS_VALUES:,} values here, "
                "bridge's limit: write the values out, or nest fewer aliases",
                node.start_mark,
            )  # fmt: skip
        open_.discard(id(node))
        measured[id(node)] = (values, depth)
        return values, depth

    measure(root)


_CYCLE = (
    "a YAML alias refers to the value that contains it, which never ends: "
    "remove the alias or move the anchor (&name) out of that value"
)


def _children(node: Node) -> list[tuple[Node, int]]:
    """The nodes inside `node`, each with the levels a `<<` merge flattens away (1 for a
    merged mapping, 2 for a list of them): merged keys land in `node` itself."""
    if isinstance(node, SequenceNode):
        return [(child, 0) for child in node.value]
    if not isinstance(node, MappingNode):
        return []
    out: list[tuple[Node, int]] = []
    for key, value in node.value:
        merge = key.tag == _MERGE_TAG
        out += [(key, 0), (value, (2 if isinstance(value, SequenceNode) else 1) if merge else 0)]
    return out


def check_text(text: str, source: str) -> None:
    """Refuse text over MAX_BYTES or with a character YAML does not allow, in one line."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ConfigError(too_big(source))
    if found := _NOT_TEXT.search(text):
        line = text.count("\n", 0, found.start()) + 1
        column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
        code = ord(found.group())
        what = (
            "a NUL byte" if code == 0 else "a control character" if code < 0xA0 else "a character"
        )
        raise ConfigError(
            f"{source}:{line}: {what} (U+{code:04X}) at column {column}, which YAML does not "
            "allow: a config is plain text; remove it (tabs and line breaks are fine)"
        )


def too_big(source: str) -> str:
    """The one-line error for a config over MAX_BYTES."""
    return (
        f"{source}: larger than {MAX_BYTES_TEXT}, the most bridge reads of a config: "
        "check that it is the right file, or make it smaller"
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
    """Parse one YAML document; malformed YAML raises ConfigError "SOURCE:LINE: invalid YAML: …",
    YAML beyond the limits above one naming the limit."""
    check_text(text, source)
    loader = Loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_aliases(root)
        data = loader.construct_document(root) if root is not None else None
    except RefusedError as exc:
        raise ConfigError(f"{source}:{exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_message(exc, source)) from None
    except yaml.YAMLError as exc:  # unmarked: e.g. a character the reader refuses
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{source}: invalid YAML: {reason}") from None
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
