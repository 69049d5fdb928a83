"""The chain of config migrations: each registered step takes version N to N+1.

`upgrade(doc)` detects the version of a parsed config and runs every step from there to
CURRENT_VERSION in memory, collecting one plain-language note per change. It works on
plain dicts (as `bridge diff` passes) and on ruamel.yaml's commented maps alike (as
`bridge migrate` passes, to keep comments), and never writes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge_cli.errors import ConfigError

CURRENT_VERSION = 2

# Keys only a version 2 config has at the top: a file with them but no `version:` is a
# bridge config that lost its first line, not a stranger's file.
_V2_KEYS = {"routes", "proxy", "control", "chaos", "cache", "budget", "store", "log"}


@dataclass(frozen=True)
class Note:
    """One change a migration made, in a line: `kind` is moved, env, added, dropped or
    unsupported; `where` names the key it concerns in the old file ("" for the whole)."""

    kind: str
    text: str
    where: str = ""
    target: str = ""  # the key it became in the new file, when it moved

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "target": self.target,
                "text": self.text}


@dataclass
class Upgraded:
    """A config brought to CURRENT_VERSION: the new document, the version it came from
    (0 for another tool's file, imported), and the notes of every step run (none when it
    was already current)."""

    doc: dict
    from_version: int
    notes: list[Note] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.from_version != CURRENT_VERSION


# A step gets the document of its version and a list to add notes to, and returns the
# document of the next version. It must not change the document it was given.
Step = Callable[[dict, list[Note]], dict]
_STEPS: dict[int, Step] = {}


def migration(from_version: int) -> Callable[[Step], Step]:
    """Register the decorated function as the step from `from_version` to the next."""

    def register(step: Step) -> Step:
        if from_version in _STEPS:
            raise RuntimeError(f"two migrations from version {from_version}")
        _STEPS[from_version] = step
        return step

    return register


def steps() -> dict[int, Step]:
    """The registered steps by the version they start from (loads the built-in ones)."""
    from bridge_cli.config.migrate import v1  # noqa: F401  (registers itself)

    return dict(_STEPS)


def detect_version(doc: Any) -> int:
    """The config version of a parsed document; ConfigError when it is not a bridge config
    or its version is one bridge does not know."""
    if not isinstance(doc, dict):
        raise ConfigError(
            f"not a bridge config: expected a mapping of keys (version, routes, ...) at the "
            f"top, got {_kind(doc)}"
        )
    if "version" in doc:
        version = doc["version"]
        if isinstance(version, int) and not isinstance(version, bool) and (
            1 <= version <= CURRENT_VERSION
        ):
            if version == 1 and "connectors" not in doc and doc.keys() & _V2_KEYS:
                raise ConfigError("`version: 1` above version 2 keys (routes, proxy, ...): "
                                  "ApiBridge's version 1 has `connectors:`; if this file was "
                                  "written for bridge, set `version: 2`")
            return version
        raise ConfigError(
            f"unknown config version {version!r}: bridge reads version 1 (ApiBridge's "
            f"connectors.yaml) and versions up to {CURRENT_VERSION}; check the file, or "
            "upgrade bridge if a newer one wrote it"
        )
    if "connectors" in doc:
        return 1
    raise ConfigError(_stranger(doc))


def _stranger(doc: dict) -> str:
    """Why a mapping without `version:` or `connectors:` is not taken, and what to do."""
    if "model_list" in doc or "litellm_settings" in doc or "router_settings" in doc:
        return ("not a bridge config: this looks like a LiteLLM config.yaml; "
                "import it with `bridge migrate --from litellm FILE`")
    if doc.keys() & _V2_KEYS:
        return "not a bridge config: no `version:` key; add `version: 2` at the top"
    return ("not a bridge config: it has neither `version:` nor ApiBridge's `connectors:` "
            "(for LiteLLM or toxiproxy files use `bridge migrate --from litellm|toxiproxy`)")


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} value"


def upgrade(doc: dict) -> Upgraded:
    """`doc` brought to CURRENT_VERSION by every registered step from its own version.
    The input is never changed; a current document comes back as it is, with no notes."""
    start = detect_version(doc)
    registered = steps()
    notes: list[Note] = []
    current = doc
    for version in range(start, CURRENT_VERSION):
        if version not in registered:
            raise ConfigError(f"no migration from config version {version}: upgrade bridge")
        current = registered[version](current, notes)
    return Upgraded(current, start, notes)
